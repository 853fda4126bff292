"""The counted code of each preset: the size of the train_gpt.py `golf submission` would ship.

    python benchmarks/bundle.py [PARAMS_FILE ...]        (default: params.yaml and configs/*.yaml)

For each params file prints the bundle's bytes, its modules, the definitions left out as unused,
the compressor chosen, the minified payload before compression, and how long unpacking takes at
start (reading the wrapper's literal, decompression and compiling every module, best of 5; importing torch not
included). Nothing here is a test.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from golfcli.params import load_params  # noqa: E402
from stages.submit.bundle import RS, US, build_bundle, run_params  # noqa: E402
from stages.submit.entry import SECTIONS  # noqa: E402


def unpack_seconds(source: bytes, repeat: int = 5) -> float:
    """Best time of what the wrapper does before the entry point runs, without the imports."""
    text = source.decode("latin-1")  # the wrapper's declared encoding (PEP 263)
    codec = re.search(r"^import .*,(brotli|lzma)$", text, re.M).group(1)
    decompress = __import__(codec).decompress
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        wrapper = compile(text, "train_gpt.py", "exec")
        payload = max((c for c in wrapper.co_consts if isinstance(c, str)), key=len)
        _, *records = decompress(payload.encode("latin-1")).decode().split(RS)
        for record in records:
            name, module_source = record.split(US, 1)
            compile(module_source, name, "exec")
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("params", nargs="*", type=Path,
                    default=[ROOT / "params.yaml", *sorted((ROOT / "configs").glob("*.yaml"))])
    args = ap.parse_args()
    print(f"{'params':<22} {'bytes':>8} {'modules':>8} {'dropped':>8} {'codec':>7} "
          f"{'payload':>8} {'unpack s':>9}")
    for path in args.params:
        bundle = build_bundle(run_params(load_params(path, SECTIONS)))
        print(f"{path.name:<22} {len(bundle.source):>8,} {len(bundle.modules):>8} "
              f"{len(bundle.dropped):>8} {bundle.codec:>7} {bundle.payload_bytes:>8,} "
              f"{unpack_seconds(bundle.source):>9.3f}")


if __name__ == "__main__":
    main()
