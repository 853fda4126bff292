"""What a context model could save on the quantized codes, before building one.

For each 2-D code matrix, the bits an ideal coder would spend under contexts a decoder can know
when it decodes that code:

- order-0 per tensor: one histogram per tensor (what `ans` codes, up to its table);
- row scale: the row's mean |code| in 8 equally filled buckets, sent as 3 bits per row;
- previous codes: the mean |code| of the two codes before it in its row, in 5 buckets (causal);
- column scale: the column's mean |code| in 8 equally filled buckets, sent as 3 bits per column;
- row and column: both, 64 contexts.

Each figure is the two-part code length: the empirical conditional entropy plus the cost of
sending each context's histogram (half a log2 of its count per free symbol probability), so a
context that only fits noise does not look like a gain. These are bounds (`golf compress
--report`, benchmarks/code_contexts.py); the ans-columns codec codes the column-scale context
(columns.py, which shares `quantile_buckets`), the others no codec uses.
"""

from __future__ import annotations

import numpy as np

OFFSET = 128  # int8 codes -> bin indices
CONTEXTS = ("order-0 per tensor", "row scale", "previous codes", "column scale", "row and column")


def entropy_bits(counts: np.ndarray) -> float:
    """Total bits of coding `counts.sum()` symbols with their own empirical distribution."""
    c = counts[counts > 0].astype(np.float64)
    return float(-(c * np.log2(c / c.sum())).sum())


def conditional_bits(codes: np.ndarray, context: np.ndarray) -> float:
    """Two-part code length of `codes` (1-D ints in [-128, 127]) given `context` (1-D, same
    length, ints >= 0): each context's codes under their own histogram, plus the histograms."""
    n_ctx = int(context.max()) + 1
    joint = np.bincount(context * 256 + codes + OFFSET, minlength=n_ctx * 256).reshape(n_ctx, 256)
    used = joint.sum(1) > 0
    alphabet = int((joint.sum(0) > 0).sum())
    model = sum((alphabet - 1) / 2 * np.log2(max(n, 2)) for n in joint.sum(1)[used])
    return sum(entropy_bits(row) for row in joint[used]) + model


def quantile_buckets(values: np.ndarray, n: int) -> np.ndarray:
    """Each value's bucket among `n` equally filled ones."""
    return np.searchsorted(np.quantile(values, np.linspace(0, 1, n + 1)[1:-1]), values)


def context_bits(q: np.ndarray) -> dict[str, float]:
    """Bits for one (rows, cols) code matrix under each context in CONTEXTS."""
    q = q.astype(np.int64)
    rows, cols = q.shape
    flat, mag = q.ravel(), np.abs(q)
    row_ctx = np.repeat(quantile_buckets(mag.mean(1), 8), cols)  # (rows * cols,)
    col_ctx = np.tile(quantile_buckets(mag.mean(0), 8), rows)  # (rows * cols,)
    before = np.zeros_like(mag, dtype=np.float64)  # mean |code| of the two before, in the row
    before[:, 1:] += mag[:, :-1]
    before[:, 2:] += mag[:, :-2]
    prev_ctx = np.searchsorted(np.array([1, 3, 6, 12]), before.ravel())
    return {
        "order-0 per tensor": conditional_bits(flat, np.zeros_like(flat)),
        "row scale": conditional_bits(flat, row_ctx) + 3 * rows,
        "previous codes": conditional_bits(flat, prev_ctx),
        "column scale": conditional_bits(flat, col_ctx) + 3 * cols,
        "row and column": conditional_bits(flat, row_ctx * 8 + col_ctx) + 3 * (rows + cols),
    }


def best_context(matrices: list[np.ndarray]) -> tuple[str, float]:
    """The context (one for all of `matrices`, 2-D code matrices) with the fewest total bits,
    and those bits; ("", 0.0) for none."""
    if not matrices:
        return "", 0.0
    totals = dict.fromkeys(CONTEXTS, 0.0)
    for q in matrices:
        for name, bits in context_bits(q).items():
            totals[name] += bits
    name = min(CONTEXTS, key=totals.__getitem__)
    return name, totals[name]
