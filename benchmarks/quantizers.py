"""Quantizers on one saved checkpoint: method x grid x bits x codec -> val_bpb, gap, bytes.

    python benchmarks/quantizers.py --checkpoint models/averaged.safetensors --data data/tokens
    python benchmarks/quantizers.py ... --equal-bytes 1000000   # every variant fitted to one budget
    python benchmarks/quantizers.py ... --methods gptq --grids sdclip --bits 6 --codecs brotli ans \
        --clip-sigmas 10 12.85 16 --rate-lambdas 0 0.1 0.3   # codecs, rate-aware rounding vs clip
    python benchmarks/quantizers.py ... --clip-sigmas 12.85 16 20 30 40 --fisher-alphas 0 1
        # row steps by Fisher (quantize.fisher_alpha) against the plain clip curve
    python benchmarks/quantizers.py ... --params configs/best.yaml --clip-multipliers 1 1.5 2 \
        --fisher-alphas 0 1   # a preset's own quantize section (group bits and clips) as the base

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

from golfcli.params import load_params
from stages import artifacts
from stages.codec.blob import pack, packed_size
from stages.eval.evaluate import evaluate_path
from stages.eval.params import EvalParams
from stages.quant.calibrate import calibrate
from stages.quant.params import QuantizeParams
from stages.quant.quantize import quantize, quantize_to_target


def interpolate(curve: list[tuple[float, float]], x: float) -> float | None:
    """y of the (x, y) curve at `x`, linearly between its points (None outside)."""
    curve = sorted(curve)
    for (x0, y0), (x1, y1) in itertools.pairwise(curve):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def equal_bpb_table(rows: list[dict], codecs: list[str]) -> None:
    """Each row against plain quantization (lambda 0 and alpha 0, its clip and multiplier sweep):
    with the first codec (brotli when listed first), its bytes over the plain curve's bytes at the
    same val_bpb, and its val_bpb minus the plain curve's at the same bytes (negative: better); for
    rate-aware or Fisher-allocated rows also its bytes over the plain curve's with that codec."""
    ref = codecs[0]
    print(f"\nagainst lambda 0, alpha 0 with {ref} across the clips: bytes at equal val_bpb, "
          f"val_bpb gap at equal bytes; other rows also against plain with their codec:")
    print("method | grid | bits | clip_sigmas | clip_mult | lambda | alpha | val_bpb | "
          + " | ".join(f"{c} / plain {ref} | {c} bpb gap" + (f" | {c} / plain {c}" if c != ref
                                                                else "") for c in codecs))
    for r in rows:
        plain = [p for p in rows if p["key"] == r["key"] and not p["lambda"] and not p["alpha"]]
        cells = []
        for c in codecs:
            at = interpolate([(p["val_bpb"], p[ref]) for p in plain], r["val_bpb"])
            bpb = interpolate([(p[ref], p["val_bpb"]) for p in plain], r[c])
            cells += [f"{r[c] / at:.4f}" if at else "outside",
                      f"{r['val_bpb'] - bpb:+.4f}" if bpb else "outside"]
            if c != ref:
                same = interpolate([(p["val_bpb"], p[c]) for p in plain], r["val_bpb"])
                lever = r["lambda"] or r["alpha"]
                cells.append(f"{r[c] / same:.4f}" if same and lever else "")
        print(" | ".join([*map(str, r["key"]), f"{r['sigmas']:g}", f"{r['mult']:.3g}",
                          f"{r['lambda']:g}", f"{r['alpha']:g}", f"{r['val_bpb']:.4f}", *cells]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=Path("models/averaged.safetensors"))
    ap.add_argument("--data", type=Path, default=Path("data/tokens"))
    ap.add_argument("--params", type=Path, default=None,
                    help="Start from this params file's quantize section (its method, grid and bits "
                         "unless given here).")
    ap.add_argument("--methods", nargs="+", default=None, help="default: rtn gptq")
    ap.add_argument("--grids", nargs="+", default=None,
                    help="default: percentile mse sdclip sdclip-hessian")
    ap.add_argument("--bits", nargs="+", type=int, default=None, help="default: 8 6 5")
    ap.add_argument("--codecs", nargs="+", default=["zstd", "lzma"])
    ap.add_argument("--equal-bytes", type=int, default=None,
                    help="Fit every variant to this many model bytes (zstd) before scoring.")
    ap.add_argument("--clip-sigmas", nargs="+", type=float, default=None,
                    help="default: 12.85, or the --params file's")
    ap.add_argument("--clip-multipliers", nargs="+", type=float, default=[1.0],
                    help="Scale every clip (quantize.clip_multiplier), group clips included.")
    ap.add_argument("--rate-lambdas", nargs="+", type=float, default=[0.0],
                    help="GPTQ's rate-aware rounding weights (quantize.gptq_rate_lambda).")
    ap.add_argument("--fisher-alphas", nargs="+", type=float, default=[0.0],
                    help="Row steps by Fisher (quantize.fisher_alpha, 0..1).")
    ap.add_argument("--keep-float-max-numel", type=int, default=None,
                    help="default: 16384, or the --params file's")
    ap.add_argument("--eval-seq-len", type=int, default=256)
    args = ap.parse_args()

    ckpt = artifacts.load(args.checkpoint, expect="checkpoint")
    eval_params = EvalParams(seq_len=args.eval_seq_len, batch_seqs=16)
    base = evaluate_path(args.checkpoint, args.data, eval_params)["val_bpb"]
    print(f"float checkpoint {args.checkpoint}: val_bpb {base:.4f}")
    if args.params:
        base_params = load_params(args.params, {"quantize": QuantizeParams})["quantize"]
    else:
        base_params = QuantizeParams(keep_float_max_numel=16384)
    if args.keep_float_max_numel is not None:
        base_params = dataclasses.replace(base_params,
                                          keep_float_max_numel=args.keep_float_max_numel)
    own = args.params is not None
    methods = args.methods or ([base_params.method] if own else ["rtn", "gptq"])
    grids = args.grids or ([base_params.grid] if own else ["percentile", "mse", "sdclip",
                                                           "sdclip-hessian"])
    bits_list = args.bits or ([base_params.bits] if own else [8, 6, 5])
    sigmas_list = args.clip_sigmas or [base_params.clip_sigmas]
    hessians = None
    cols = ["method", "grid", "bits", "clip_sigmas", "lambda", "alpha", "val_bpb", "gap"] + \
        [f"{c} bytes" for c in args.codecs] + ["clip_mult", "quant s"]
    print(" | ".join(cols))
    print(" | ".join("---" for _ in cols))
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for method, grid, bits, sigmas, mult, lam, alpha in itertools.product(
                methods, grids, bits_list, sigmas_list, args.clip_multipliers,
                args.rate_lambdas, args.fisher_alphas):
            if lam and method != "gptq":
                continue  # the rate term is GPTQ's
            params = dataclasses.replace(base_params, method=method, grid=grid, bits=bits,
                                         clip_sigmas=sigmas, clip_multiplier=mult,
                                         gptq_rate_lambda=lam, fisher_alpha=alpha)
            kwargs: dict = {"parents": {}}
            if params.needs_calibration():
                if hessians is None:  # once, with row Fisher if any row of the sweep needs it
                    hessians, provenance = calibrate(ckpt, str(args.data), dataclasses.replace(
                        params, fisher_alpha=max(args.fisher_alphas)))
                kwargs.update(hessians=hessians, calibration=provenance)
            t0 = time.perf_counter()
            if args.equal_bytes:
                q, search = quantize_to_target(ckpt, params, target_bytes=args.equal_bytes,
                                               measure=lambda a: packed_size(a, "zstd"), **kwargs)
                mult = search["clip_multiplier"]
            else:
                q = quantize(ckpt, params, **kwargs)
            seconds = time.perf_counter() - t0
            path = Path(tmp) / "q.safetensors"
            artifacts.save(q, path)
            bpb = evaluate_path(path, args.data, eval_params)["val_bpb"]
            payload = path.read_bytes()
            sizes = {codec: len(pack(payload, codec)) for codec in args.codecs}
            rows.append({"key": (method, grid, bits), "sigmas": sigmas, "mult": mult,
                         "lambda": lam,
                         "alpha": alpha, "val_bpb": bpb, **sizes})
            print(" | ".join([method, grid, str(bits), f"{sigmas:g}", f"{lam:g}", f"{alpha:g}",
                              f"{bpb:.4f}",
                              f"{bpb - base:+.4f}", *(f"{n:,}" for n in sizes.values()),
                              f"{mult:.3g}", f"{seconds:.1f}"]), flush=True)
    if len(sigmas_list) * len(args.clip_multipliers) > 1:
        equal_bpb_table(rows, args.codecs)


if __name__ == "__main__":
    main()
