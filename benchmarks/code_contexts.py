"""How much a context model could save on a quantized artifact's codes, before building one.

    python benchmarks/code_contexts.py QUANTIZED.safetensors

For the int codes of every 2-D quantized tensor, prints the bytes an ideal coder would spend
under each context a decoder can know, against brotli-11 on the same codes (each tensor alone):

- order-0 per tensor: one histogram per tensor (what `ans` codes, up to its table);
- row scale: the row's mean |code| in 8 quantile buckets, sent as 3 bits per row;
- previous codes: the mean |code| of the two before it in its row, in 5 buckets (causal);
- column scale: the column's mean |code| in 8 quantile buckets, sent as 3 bits per column;
- row and column: both, 64 contexts.

Each figure is the empirical conditional entropy plus the cost of sending each context's
histogram (half a log2 of its count per free symbol probability, the two-part code length), so a
context that only fits noise does not look like a gain. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import brotli
import numpy as np
from safetensors.numpy import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from stages.tensorfile import QUANT_SUFFIX  # noqa: E402

OFFSET = 128  # int8 codes -> bin indices


def entropy_bits(counts: np.ndarray) -> float:
    """Total bits of coding `counts.sum()` symbols with their own empirical distribution."""
    c = counts[counts > 0].astype(np.float64)
    return float(-(c * np.log2(c / c.sum())).sum())


def conditional_bits(codes: np.ndarray, context: np.ndarray) -> float:
    """Two-part code length of `codes` (1-D int) given `context` (1-D, same length, ints >= 0)."""
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
    """Bits for one (rows, cols) code matrix under each context (module docstring)."""
    rows, cols = q.shape
    flat, mag = q.ravel(), np.abs(q)
    row_ctx = np.repeat(quantile_buckets(mag.mean(1), 8), cols)
    col_ctx = np.tile(quantile_buckets(mag.mean(0), 8), rows)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact", help="a quantized artifact (golf quantize's output)")
    args = ap.parse_args()
    tensors = load_file(args.artifact)
    matrices = {k: v.astype(np.int64) for k, v in tensors.items()
                if k.endswith(QUANT_SUFFIX) and v.ndim == 2 and v.size}
    if not matrices:
        raise SystemExit(f"{args.artifact}: no 2-D quantized codes (is it a quantized artifact?)")
    totals: dict[str, float] = {}
    brotli_bytes = 0
    for q in matrices.values():
        for name, bits in context_bits(q).items():
            totals[name] = totals.get(name, 0.0) + bits
        brotli_bytes += len(brotli.compress(q.astype(np.int8).tobytes(), quality=11))
    n = sum(q.size for q in matrices.values())
    print(f"{len(matrices)} code matrices, {n:,} codes; brotli-11 {brotli_bytes:,} bytes "
          f"({8 * brotli_bytes / n:.4f} bits/code)")
    print(f"{'context':<20} {'bytes':>10} {'bits/code':>10} {'x brotli':>9}")
    for name, bits in totals.items():
        print(f"{name:<20} {bits / 8:>10,.0f} {bits / n:>10.4f} {bits / 8 / brotli_bytes:>9.4f}")


if __name__ == "__main__":
    main()
