"""Quantizers on one saved checkpoint: method x grid x bits x codec -> val_bpb, gap, bytes.

    python benchmarks/quantizers.py --checkpoint models/averaged.safetensors --data data/tokens
    python benchmarks/quantizers.py ... --equal-bytes 1000000   # every variant fitted to one budget

Prints a table; nothing here is a test. Calibration (for gptq and sdclip-hessian) reads the train
shards of --data; scoring reads its validation split.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import tempfile
import time
from pathlib import Path

from stages import artifacts
from stages.codec.blob import pack, packed_size
from stages.eval.evaluate import evaluate_path
from stages.eval.params import EvalParams
from stages.quant.calibrate import calibrate
from stages.quant.params import QuantizeParams
from stages.quant.quantize import quantize, quantize_to_target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=Path("models/averaged.safetensors"))
    ap.add_argument("--data", type=Path, default=Path("data/tokens"))
    ap.add_argument("--methods", nargs="+", default=["rtn", "gptq"])
    ap.add_argument("--grids", nargs="+", default=["percentile", "mse", "sdclip", "sdclip-hessian"])
    ap.add_argument("--bits", nargs="+", type=int, default=[8, 6, 5])
    ap.add_argument("--codecs", nargs="+", default=["zstd", "lzma"])
    ap.add_argument("--equal-bytes", type=int, default=None,
                    help="Fit every variant to this many model bytes (zstd) before scoring.")
    ap.add_argument("--clip-sigmas", type=float, default=12.85)
    ap.add_argument("--keep-float-max-numel", type=int, default=16384)
    ap.add_argument("--eval-seq-len", type=int, default=256)
    args = ap.parse_args()

    ckpt = artifacts.load(args.checkpoint, expect="checkpoint")
    eval_params = EvalParams(seq_len=args.eval_seq_len, batch_seqs=16)
    base = evaluate_path(args.checkpoint, args.data, eval_params)["val_bpb"]
    print(f"float checkpoint {args.checkpoint}: val_bpb {base:.4f}")
    base_params = QuantizeParams(clip_sigmas=args.clip_sigmas,
                                 keep_float_max_numel=args.keep_float_max_numel)
    hessians = None
    cols = ["method", "grid", "bits", "val_bpb", "gap"] + [f"{c} bytes" for c in args.codecs] + \
        ["clip_mult", "quant s"]
    print(" | ".join(cols))
    print(" | ".join("---" for _ in cols))
    with tempfile.TemporaryDirectory() as tmp:
        for method, grid, bits in itertools.product(args.methods, args.grids, args.bits):
            params = dataclasses.replace(base_params, method=method, grid=grid, bits=bits)
            kwargs: dict = {"parents": {}}
            if params.needs_calibration():
                if hessians is None:
                    hessians, provenance = calibrate(ckpt, str(args.data), params)
                kwargs.update(hessians=hessians, calibration=provenance)
            t0 = time.perf_counter()
            if args.equal_bytes:
                q, search = quantize_to_target(ckpt, params, target_bytes=args.equal_bytes,
                                               measure=lambda a: packed_size(a, "zstd"), **kwargs)
                mult = search["clip_multiplier"]
            else:
                q, mult = quantize(ckpt, params, **kwargs), 1.0
            seconds = time.perf_counter() - t0
            path = Path(tmp) / "q.safetensors"
            artifacts.save(q, path)
            bpb = evaluate_path(path, args.data, eval_params)["val_bpb"]
            payload = path.read_bytes()
            sizes = [f"{len(pack(payload, codec)):,}" for codec in args.codecs]
            print(" | ".join([method, grid, str(bits), f"{bpb:.4f}", f"{bpb - base:+.4f}", *sizes,
                              f"{mult:.3g}", f"{seconds:.1f}"]), flush=True)


if __name__ == "__main__":
    main()
