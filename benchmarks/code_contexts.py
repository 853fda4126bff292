"""How much a context model could save on a quantized artifact's codes, before building one.

    python benchmarks/code_contexts.py QUANTIZED.safetensors

For the int codes of every 2-D quantized tensor, prints the bytes an ideal coder would spend
under each context a decoder can know (stages/codec/contexts.py says which and how they are
counted), against brotli-11 on the same codes (each tensor alone). Nothing here is a test.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import brotli
import numpy as np
from safetensors.numpy import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from stages.codec.contexts import context_bits  # noqa: E402
from stages.tensorfile import QUANT_SUFFIX  # noqa: E402


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
