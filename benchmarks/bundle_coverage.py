"""How small train_gpt.py could get if it held only the code a run executes: a lower bound.

    pip install coverage
    python benchmarks/bundle_coverage.py [--data data/tokens] [PARAMS_FILE ...]

For each params file (default: configs/baseline.yaml and configs/best.yaml): runs the preset
shrunk to CPU size (presets.py's `reduced`, width 64, 4 steps) through the bundle's own entry
point in-process, under coverage; drops every statement of the bundled modules that never ran;
packs what is left as train_gpt.py would (stages/submit/pack.py) and prints the compressed
payload before and after. It is a lower bound, not a plan: the statements dropped include every
check and error that did not fire and the GPU paths (compile, autocast, flash attention, several
ranks) a CPU run does not take, all of which a real run needs. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "benchmarks"))

from presets import reduced  # noqa: E402

from stages.submit import bundle  # noqa: E402
from stages.submit.entry import SECTIONS, run  # noqa: E402
from stages.submit.pack import pack_sources  # noqa: E402


def executed_lines(frozen: dict, data: Path) -> dict[str, set[int]]:
    """Source file -> the lines a run of `frozen` executed, imports included: the run is a fresh
    interpreter under `coverage run`, in a scratch folder (it writes logs/ and final_model.golf)."""
    import coverage

    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "frozen.json").write_text(json.dumps(frozen))
        subprocess.run([sys.executable, "-m", "coverage", "run", "--data-file=.coverage",
                        f"--include={ROOT / 'stages'}/*", str(Path(__file__).resolve()),
                        "--run-frozen", "frozen.json"], cwd=scratch, check=True,
                       stdout=subprocess.DEVNULL, env={**os.environ, "DATA_PATH": str(data)})
        measured = coverage.CoverageData(basename=str(Path(scratch) / ".coverage"))
        measured.read()
        return {f: set(measured.lines(f) or ()) for f in measured.measured_files()}


def keep_executed(body: list[ast.stmt], lines: set[int]) -> list[ast.stmt]:
    """The statements of `body` (recursively) with at least one executed line."""
    out = []
    for st in body:
        if not set(range(st.lineno, (st.end_lineno or st.lineno) + 1)) & lines:
            continue
        for field in ("body", "orelse", "finalbody"):
            inner = getattr(st, field, None)
            if isinstance(inner, list) and inner and isinstance(inner[0], ast.stmt):
                setattr(st, field, keep_executed(inner, lines) or
                        ([ast.Pass()] if field == "body" else []))
        if isinstance(st, ast.Try) and not st.handlers and not st.finalbody:
            st.finalbody = [ast.Pass()]  # a try needs one or the other
        out.append(st)
    return out


def packed_bytes(trees: dict[str, ast.Module]) -> int:
    """brotli-11 bytes of the packed sources, as build_bundle compresses them (no wrapper)."""
    where = {m: bundle.module_path(m).relative_to(ROOT).as_posix() for m in trees}
    sources, _ = pack_sources(trees, where)
    return len(bundle.PAYLOAD_CODECS["brotli"](bundle.payload_document("", sources)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("params", nargs="*", type=Path,
                    default=[ROOT / "configs/baseline.yaml", ROOT / "configs/best.yaml"])
    ap.add_argument("--data", type=Path, default=ROOT / "data/tokens",
                    help="token shards (dvc repro makes data/tokens)")
    ap.add_argument("--run-frozen", type=Path, help=argparse.SUPPRESS)  # the measured run itself
    args = ap.parse_args()
    if args.run_frozen:
        run(json.loads(args.run_frozen.read_text()), str(ROOT / "params.yaml"))
        return
    if not (args.data / "manifest.json").is_file():
        sys.exit(f"{args.data}: no token shards (run dvc repro, or pass --data)")
    from stages.params import to_dict

    print(f"{'params':<16} {'modules':>8} {'packed':>8} {'executed only':>14} {'share':>6}")
    for path in args.params:
        shrunk = reduced(path, 64, 4)
        sections = {s: cls(**shrunk.get(s, {})) for s, cls in SECTIONS.items()}
        frozen = {s: to_dict(v) for s, v in sections.items()}
        modules = bundle.bundle_modules(frozen)
        lines = executed_lines(frozen, args.data.resolve())
        full = {m: ast.parse(bundle.module_path(m).read_text()) for m in modules}
        ran = {}
        for m in modules:
            tree = ast.parse(bundle.module_path(m).read_text())
            tree.body = keep_executed(tree.body, lines.get(str(bundle.module_path(m)), set())) \
                or [ast.Pass()]
            ran[m] = tree
        before, after = packed_bytes(full), packed_bytes(ran)
        print(f"{path.name:<16} {len(modules):>8} {before:>8,} {after:>14,} "
              f"{after / before:>6.1%}")


if __name__ == "__main__":
    main()
