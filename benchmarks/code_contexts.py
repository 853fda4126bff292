"""How much a context model could save on a quantized artifact's codes, before building one.

    python benchmarks/code_contexts.py QUANTIZED.safetensors

For the int codes of every 2-D quantized tensor, prints the bytes an ideal coder would spend
under each context a decoder can know (stages/codec/contexts.py says which and how they are
counted), against brotli-11 on the same codes (each tensor alone). Then the row x column spread
(`product_bits`), and the code above as context, with rows as stored and re-ordered by a greedy
L1 nearest-neighbour walk (the best record's row ordering before its column-major ZPAQ; the
permutation paid). Then two floors: each column (row) under its own histogram, sent for free. No
coder that treats a column's (row's) codes as draws from one distribution, whatever it knows of
the column (row), spends fewer bits, since a sample's own histogram codes it in the fewest. Last,
the tensors that are not codes (row scales, small tensors kept in float): what brotli-11 spends on
them as stored and split into byte planes. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import brotli
import numpy as np
import torch
from safetensors.numpy import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from stages.codec.contexts import (  # noqa: E402
    conditional_bits,
    context_bits,
    entropy_bits,
    quantile_buckets,
)
from stages.tensorfile import QUANT_SUFFIX  # noqa: E402


def free_histogram_bits(q: np.ndarray, axis: int) -> float:
    """Bits of `q` (rows, cols) with each column (axis 0) or row (axis 1) under its own
    histogram, the histograms not paid for: a floor, not a coder."""
    lines = q if axis == 1 else q.T
    return sum(entropy_bits(np.bincount(line + 128, minlength=256)) for line in lines)


def above_bits(q: np.ndarray) -> float:
    """Bits of `q` (rows, cols), each code under the histogram of its context, the |code| above it
    capped at 7 (histograms paid); the first row under its own histogram."""
    ctx = np.minimum(np.abs(q[:-1]), 7).ravel()
    return conditional_bits(q[1:].ravel(), ctx) + conditional_bits(q[0], np.zeros_like(q[0]))


def nearest_neighbour_walk(q: np.ndarray) -> np.ndarray:
    """Row order of a greedy walk from row 0, each step to the nearest (L1) row not yet visited."""
    rows = torch.from_numpy(q).float()[None]  # (1, rows, cols)
    dist = torch.cdist(rows, rows, p=1)[0].numpy()  # (rows, rows)
    order, seen = [0], np.zeros(len(q), dtype=bool)
    seen[0] = True
    for _ in range(len(q) - 1):
        order.append(int(np.where(seen, np.inf, dist[order[-1]]).argmin()))
        seen[order[-1]] = True
    return np.array(order)


def product_bits(q: np.ndarray, buckets: int = 8) -> float:
    """Bits of `q` (rows, cols) under the product of its row's and column's scale: each mean
    |code| in `buckets` equally filled buckets (sent, log2(buckets) bits each), each code's context
    the product of its two buckets' mean scales, in `buckets` equally filled buckets (histograms
    paid). A code's spread is its row's spread times its column's if the two act as factors."""
    mag = np.abs(q)
    scales = []
    for axis_mean in (mag.mean(1), mag.mean(0)):  # (rows,), (cols,)
        ids = quantile_buckets(axis_mean, buckets)
        centre = np.array([axis_mean[ids == b].mean() if (ids == b).any() else 0.0
                           for b in range(buckets)])
        scales.append(centre[ids])
    log_spread = np.log(np.outer(*scales) + 1e-9)  # (rows, cols)
    ctx = quantile_buckets(log_spread.ravel(), buckets)
    return conditional_bits(q.ravel(), ctx) + math.log2(buckets) * sum(q.shape)


def byte_plane_bytes(values: np.ndarray) -> int:
    """brotli-11 bytes of `values` split into byte planes (every value's first byte, then every
    second byte, ...): a float's sign and exponent bytes repeat where its mantissa's do not."""
    raw = np.frombuffer(values.tobytes(), np.uint8).reshape(-1, values.dtype.itemsize)  # (n, w)
    return sum(len(brotli.compress(plane.tobytes(), quality=11)) for plane in raw.T)


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
    floors = {"floor: per column": 0.0, "floor: per row": 0.0}
    more = {"row x column scale": 0.0, "code above": 0.0, "code above, NN rows": 0.0}
    for q in matrices.values():
        for name, bits in context_bits(q).items():
            totals[name] = totals.get(name, 0.0) + bits
        permutation = math.lgamma(len(q) + 1) / math.log(2)  # log2(rows!) bits
        more["row x column scale"] += product_bits(q)
        more["code above"] += above_bits(q)
        more["code above, NN rows"] += above_bits(q[nearest_neighbour_walk(q)]) + permutation
        floors["floor: per column"] += free_histogram_bits(q, 0)
        floors["floor: per row"] += free_histogram_bits(q, 1)
        brotli_bytes += len(brotli.compress(q.astype(np.int8).tobytes(), quality=11))
    n = sum(q.size for q in matrices.values())
    print(f"{len(matrices)} code matrices, {n:,} codes; brotli-11 {brotli_bytes:,} bytes "
          f"({8 * brotli_bytes / n:.4f} bits/code)")
    print(f"{'context':<20} {'bytes':>10} {'bits/code':>10} {'x brotli':>9}")
    for name, bits in {**totals, **more, **floors}.items():
        print(f"{name:<20} {bits / 8:>10,.0f} {bits / n:>10.4f} {bits / 8 / brotli_bytes:>9.4f}")
    others: dict[str, list[np.ndarray]] = {}  # "kind dtype" -> the tensors that are not codes
    for name, t in tensors.items():
        if name not in matrices and t.size:
            others.setdefault(f"{name.rsplit('.', 1)[-1]} {t.dtype}", []).append(t.ravel())
    print(f"\n{'not codes':<30} {'raw':>8} {'brotli-11':>10} {'byte planes':>12}")
    sums = np.zeros(3, dtype=np.int64)
    for kind, parts in sorted(others.items()):
        values = np.concatenate(parts)
        row = np.array([values.nbytes, len(brotli.compress(values.tobytes(), quality=11)),
                        byte_plane_bytes(values)])
        sums += row
        print(f"{kind:<30} {row[0]:>8,} {row[1]:>10,} {row[2]:>12,}")
    print(f"{'all':<30} {sums[0]:>8,} {sums[1]:>10,} {sums[2]:>12,}")


if __name__ == "__main__":
    main()
