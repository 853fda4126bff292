"""`golf submission`: the records folder a challenge pull request adds.

    records/track_10min_16mb/<date>_<name>/
        train_gpt.py          the bundle (bundle.py): its own bytes are the counted code
        submission.json       the results, per seed, and a compliance block from `golf audit`
        README.md             the stack, the results table, the time ledger, how to run it
        train_seed<N>.log     each seed's log
        requirements.txt      the packages train_gpt.py imports, pinned to the versions here

Each seed gives its log, its `golf eval --out` metrics and its `golf audit --json` result. The folder
is refused (one-line error, nothing written) when a file is missing or malformed, when the seeds
scored different validation data, when an audit failed, or when a seed's model + code is over the
limit; it is written beside the destination and renamed into place, and never over a folder that
holds anything.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import math
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from stages import __version__
from stages.budget import LIMIT_BYTES
from stages.errors import GolfError
from stages.submit.bundle import Bundle, module_path
from stages.ledger import parse_ledger, totals
from stages.submit.report import readme, technique_summary

TRACK = "10min_16mb"


class SubmissionError(GolfError):
    """Inputs that do not make a valid submission folder."""


@dataclass(frozen=True)
class SeedRun:
    seed: int
    log: Path
    eval: Path
    audit: Path


@dataclass(frozen=True)
class SeedResult:
    seed: int
    log_text: str
    metrics: dict  # golf eval --out
    audit: dict  # golf audit --json
    steps: int | None
    step_avg_ms: float | None
    ledger: dict[str, float]


def _read_json(path: Path, seed: int, keys: tuple[str, ...]) -> dict:
    if not path.is_file():
        raise SubmissionError(f"seed {seed}: {path}: no such file")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SubmissionError(f"seed {seed}: {path}: not JSON ({e})") from None
    missing = [k for k in keys if not isinstance(data, dict) or k not in data]
    if missing:
        raise SubmissionError(f"seed {seed}: {path}: no '{missing[0]}' (is it the right file?)")
    return data


def _steps(log: str) -> tuple[int | None, float | None]:
    """Steps and ms per step from a log's stop line (train_gpt.py and golf train write it)."""
    m = re.search(r"^stopped_by: \S+ steps: (\d+) train_time:([0-9.]+)ms", log, re.M)
    if not m:
        return None, None
    steps = int(m.group(1))
    return steps, round(float(m.group(2)) / steps, 2) if steps else None


def _check_code(log: str, seed: int, path: Path, bundle: Bundle) -> None:
    """A log written by a train_gpt.py names its hash: it must be the one that ships."""
    m = re.search(r"^Code size: \d+ bytes \(train_gpt.py, sha256 ([0-9a-f]{64})\)", log, re.M)
    if m and m.group(1) != hashlib.sha256(bundle.source).hexdigest():
        raise SubmissionError(f"seed {seed}: {path} was written by a train_gpt.py other than the "
                              f"one these params and this golf pack (sha256 {m.group(1)[:12]}...); "
                              f"run the shipped file, or pack with the params and golf it ran")


def read_run(run: SeedRun, bundle: Bundle) -> SeedResult:
    if not run.log.is_file():
        raise SubmissionError(f"seed {run.seed}: {run.log}: no such file")
    log = run.log.read_text(errors="replace")
    _check_code(log, run.seed, run.log, bundle)
    metrics = _read_json(run.eval, run.seed, ("val_loss", "val_bpb", "tokens", "bytes", "model"))
    audit = _read_json(run.audit, run.seed, ("passed", "checks"))
    if not audit["passed"]:
        failed = [c["name"] for c in audit["checks"] if not c.get("passed")]
        raise SubmissionError(f"seed {run.seed}: {run.audit}: the audit failed "
                              f"({', '.join(failed) or 'see the file'})")
    for key in ("val_loss", "val_bpb"):
        if not isinstance(metrics[key], (int, float)) or not math.isfinite(metrics[key]):
            raise SubmissionError(f"seed {run.seed}: {run.eval}: {key} is not a number")
    steps, step_avg = _steps(log)
    return SeedResult(run.seed, log, metrics, audit, steps, step_avg, totals(parse_ledger(log)))


def check_runs(results: list[SeedResult], code_bytes: int) -> None:
    seeds = [r.seed for r in results]
    if not results:
        raise SubmissionError("no seed runs given")
    if len(set(seeds)) != len(seeds):
        raise SubmissionError(f"seeds must differ, got {seeds}")
    scored = {(r.metrics["tokens"], r.metrics["bytes"]) for r in results}
    if len(scored) > 1:
        raise SubmissionError(f"the seeds scored different validation data (tokens, bytes): "
                              f"{sorted(scored)}")
    for r in results:
        total = int(r.metrics["model"]["file_bytes"]) + code_bytes
        if total > LIMIT_BYTES:
            raise SubmissionError(f"seed {r.seed}: model {r.metrics['model']['file_bytes']:,} + "
                                  f"code {code_bytes:,} = {total:,} bytes is over {LIMIT_BYTES:,}")


def _mean_std(xs: list[float]) -> tuple[float, float]:
    mean = sum(xs) / len(xs)
    var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1) if len(xs) > 1 else 0.0
    return mean, math.sqrt(var)


def _compliance(results: list[SeedResult], params: dict) -> dict:
    def passed(name: str) -> bool:
        return all(any(c["name"] == name and c["passed"] for c in r.audit["checks"])
                   for r in results)
    return {
        "score_first_ttt": params["eval"]["mode"] != "ttt" or passed("score before update"),
        "no_validation_data_in_training_or_calibration": passed("provenance"),
        "causal_and_normalised_predictions": passed("causality") and passed("normalisation"),
        "artifact_under_16mb": passed("size"),
        "eval_under_600s": all(r.metrics.get("eval_seconds", 0) <= 600 for r in results),
        "train_under_600s": all(r.ledger["train"] <= 600 for r in results),
        "audited_by": f"golf audit {__version__}",
    }


def submission_json(results: list[SeedResult], params: dict, bundle: Bundle, meta: dict) -> dict:
    loss_mean, loss_std = _mean_std([r.metrics["val_loss"] for r in results])
    bpb_mean, bpb_std = _mean_std([r.metrics["val_bpb"] for r in results])
    code = len(bundle.source)
    per_seed = {str(r.seed): {
        "val_loss": r.metrics["val_loss"], "val_bpb": r.metrics["val_bpb"],
        "model_bytes": int(r.metrics["model"]["file_bytes"]),
        "artifact_bytes": int(r.metrics["model"]["file_bytes"]) + code,
        "steps": r.steps, "step_avg_ms": r.step_avg_ms,
        "eval_time_s": r.metrics.get("eval_seconds"),
        "train_time_s": round(r.ledger["train"], 3) or None,
    } for r in results}
    return {
        "name": meta["name"], "blurb": meta["blurb"], "author": meta["author"],
        "github_id": meta["github_id"], "date": meta["date"], "track": TRACK,
        "val_loss": loss_mean, "val_loss_std": loss_std, "val_bpb": bpb_mean, "val_bpb_std": bpb_std,
        "seeds": [r.seed for r in results], "seed_results": per_seed,
        "bytes_total": max(s["artifact_bytes"] for s in per_seed.values()), "bytes_code": code,
        "hardware": meta["hardware"], "pytorch_version": meta["pytorch_version"],
        "technique_summary": technique_summary(params), "golf_version": __version__,
        "compliance": _compliance(results, params),
    }


def requirements(bundle: Bundle) -> str:
    """The distributions whose modules the bundled code imports, pinned to the installed versions."""
    import ast

    from stages.submit.bundle import imports

    wanted = {bundle.codec} - set(sys.stdlib_module_names)
    for module in bundle.modules:
        top, nested = imports(ast.parse(module_path(module).read_text()))
        wanted |= {n.split(".")[0] for n in top | nested}
    wanted -= set(sys.stdlib_module_names) | {"stages", "__future__"}
    dists = importlib.metadata.packages_distributions()
    lines = set()
    for name in wanted:
        for dist in dists.get(name, []):
            lines.add(f"{dist.lower()}=={importlib.metadata.version(dist)}")
    return "".join(f"{line}\n" for line in sorted(lines))


def write_submission(out_dir: str | os.PathLike, params: dict, bundle: Bundle,
                     runs: list[SeedRun], meta: dict) -> dict:
    """Write the folder; return submission.json. `params`: every section a run reads, as data."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SubmissionError(f"{out}: exists and is not an empty folder; refusing to write there")
    results = [read_run(run, bundle) for run in runs]
    check_runs(results, len(bundle.source))
    meta = {"date": datetime.date.today().isoformat(), **meta}
    doc = submission_json(results, params, bundle, meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700 folders; honour the umask like mkdir
    try:
        (tmp / "train_gpt.py").write_bytes(bundle.source)
        (tmp / "submission.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        (tmp / "README.md").write_text(readme(doc, params, results))
        (tmp / "requirements.txt").write_text(requirements(bundle))
        for r in results:
            (tmp / f"train_seed{r.seed}.log").write_text(r.log_text)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return doc
