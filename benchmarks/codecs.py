"""Compare golf's codecs on one quantized artifact: size, speed, and distance to the entropy bound.

    python benchmarks/codecs.py models/quantized.safetensors [--codecs ans zstd] [--repeat 3]
    python benchmarks/codecs.py --random best --codecs ans ans-columns   # a record's full size

For each codec (at its strongest level) prints the blob bytes, the bits per weight spent on the code
groups (for `ans` its real per-group records; for the others each group's codes compressed alone),
the compress and decompress seconds (best of --repeat), and the order-0 entropy bound of the codes.
With --random PRESET the artifact is configs/PRESET.yaml's model at full size, weights drawn
N(0, 0.02) and quantized to the preset's bits by RTN on its grid: the times are those of a
record-sized artifact, the bytes are not a trained model's.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

# Run from a checkout without installing: the repository root holds the `stages` package.
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stages.codec.blob import CODECS, get_codec, pack  # noqa: E402
from stages.codec.entropy import group_report  # noqa: E402


def best_time(fn, repeat: int) -> tuple[float, object]:
    """The shortest wall time of `repeat` calls of `fn`, and its last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def measure(payload: bytes, name: str, repeat: int) -> dict:
    """One table row for codec `name` at its default level."""
    codec = get_codec(name)
    level = codec.default_level
    comp_s, body = best_time(lambda: codec.compress(payload, level), repeat)
    decomp_s, back = best_time(lambda: codec.decompress(body), repeat)
    if back != payload:
        raise SystemExit(f"{name}: round trip failed")
    codes = group_report(payload, name, level)["codes"]
    return {"codec": f"{name}-{level}", "blob": len(pack(payload, name, level)),
            "weights": codes["weights"], "bound": codes["bound_bytes"],
            "bound_bpw": codes["entropy_bits_per_weight"], "codes_bpw": codes["bits_per_weight"],
            "ratio": codes["ratio"], "comp_s": comp_s, "decomp_s": decomp_s}


def print_table(path: Path, payload: bytes, rows: list[dict]) -> None:
    first = rows[0]
    print(f"{path}: {len(payload):,} bytes, {first['weights']:,} quantized weights, "
          f"order-0 bound {round(first['bound']):,} bytes ({first['bound_bpw']:.4f} bits/weight)")
    print(f"{'codec':<14} {'blob bytes':>12} {'codes b/w':>10} {'x bound':>8} {'bound b/w':>10} "
          f"{'compress s':>11} {'decompress s':>13}")
    for r in rows:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.4f}"
        print(f"{r['codec']:<14} {r['blob']:>12,} {r['codes_bpw']:>10.4f} {ratio:>8} "
              f"{r['bound_bpw']:>10.4f} {r['comp_s']:>11.3f} {r['decomp_s']:>13.3f}")


def random_payload(preset: str) -> bytes:
    """A quantized artifact of configs/PRESET.yaml's model at full size from random weights."""
    from gpu_check import load_preset, random_state  # benchmarks/, on the path as this script's

    from stages.artifacts import Artifact, to_bytes
    from stages.quant.quantize import quantize

    p = load_preset(preset, dry=False)
    grid = "sdclip" if p.quantize.grid == "sdclip-hessian" else p.quantize.grid  # no calibration
    params = dataclasses.replace(p.quantize, method="rtn", grid=grid, device="cpu")
    return to_bytes(quantize(Artifact("checkpoint", random_state(p.model), p.model), params,
                             parents={}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path, nargs="?", help="a quantized artifact (.safetensors)")
    parser.add_argument("--random", metavar="PRESET",
                        help="instead: configs/PRESET.yaml's model, random weights, full size")
    parser.add_argument("--codecs", nargs="+", default=list(CODECS), choices=list(CODECS))
    parser.add_argument("--repeat", type=int, default=1, help="timing runs per codec (best kept)")
    args = parser.parse_args()
    if (args.artifact is None) == (args.random is None):
        parser.error("give an artifact or --random PRESET")
    if args.random and not (ROOT / "configs" / f"{args.random}.yaml").is_file():
        parser.error(f"--random {args.random}: no configs/{args.random}.yaml")
    if args.artifact and not args.artifact.is_file():
        parser.error(f"{args.artifact}: no such file")
    payload = random_payload(args.random) if args.random else args.artifact.read_bytes()
    rows = [measure(payload, name, args.repeat) for name in args.codecs]
    print_table(args.artifact or Path(f"random {args.random}"), payload, rows)


if __name__ == "__main__":
    main()
