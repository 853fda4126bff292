"""dvc.yaml lists exactly what each stage runs, and the real pipeline caches as promised."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.import_graph import ROOT, collapse, command_closure, stage_argv

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
# compress, audit and submission also read every section a train_gpt.py freezes: its size is the
# counted code.
RUN = ["model", "train", "average", "quantize"]
SECTIONS_READ = {"tokenize": ["tokenize"], "train": ["model", "train"], "average": ["average"],
                 "quantize": ["quantize"], "compress": ["compress", *RUN, "eval"],
                 "eval": ["eval"], "audit": ["eval", *RUN, "compress"],
                 "submission": [*RUN, "compress", "eval"]}
# These pack the code that ships (stages/submit/bundle.py), so they depend on the whole code tree.
WHOLE_TREE = ("compress", "audit", "submission")
# The stages a code edit must not rerun unless it touches what they run: they train and calibrate.
EXPENSIVE = ("train", "quantize")


def _code_deps(stage: str) -> list[str]:
    return sorted(d for d in DVC[stage]["deps"] if d.startswith(("stages", "golfcli")))


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("stage", list(SECTIONS_READ))
def test_code_deps_are_what_the_command_runs(stage):
    needed = command_closure(stage_argv(DVC[stage]["cmd"]))
    deps = _code_deps(stage)
    if stage in WHOLE_TREE:
        assert deps == ["golfcli", "stages"]
    else:  # exactly: every file it runs, and nothing it does not (folders when all files are)
        assert deps == collapse(needed), f"python -m tests.import_graph prints {stage}'s deps"
    missing = sorted(p for p in needed if not _covered(p, deps))
    assert not missing, f"{stage} runs {missing} but dvc.yaml does not list them"
    assert DVC[stage]["params"] == SECTIONS_READ[stage]
    assert DVC[stage]["cmd"].startswith(f"golf {stage} ")


def _every_source() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for folder in ("stages", "golfcli")
                  for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def test_edits_outside_training_leave_the_expensive_stages_alone():
    """An edit to a codec, eval, audit, compare, import, inspect or any command but its own must
    not rerun training or quantization (DVC reruns a stage when one of its deps changes)."""
    for stage in EXPENSIVE:
        deps = _code_deps(stage)
        touched = [p for p in _every_source() if _covered(p, deps) and (
            p.startswith(("stages/codec/", "stages/eval/", "stages/tools/"))
            or (p.startswith("golfcli/commands/") and not p.endswith(
                ("__init__.py", f"commands/{stage}.py"))))]
        assert not touched, f"{stage} reruns when {touched} change"


def test_stages_chain_through_their_outputs():
    outs = {s: [o if isinstance(o, str) else next(iter(o)) for o in DVC[s].get("outs", [])]
            for s in DVC}
    order = list(DVC)
    assert order == ["tokenize", "train", "average", "quantize", "compress", "eval", "audit",
                     "submission"]
    chain = order[:-2]
    for prev, stage in zip(chain, chain[1:], strict=False):
        assert set(outs[prev]) & set(DVC[stage]["deps"]), f"{stage} does not consume {prev}"
    # The audit checks what eval scored: the same blob and data.
    assert {"models/model.golf", "data/tokens"} <= set(DVC["audit"]["deps"])
    assert "runs/train/swa" in outs["train"]  # SWA snapshots are tracked outputs
    # The hand-in is made of what the run left: its log, eval metrics and audit.
    assert {"runs/train/train.log", "metrics/eval.json", "metrics/audit.json"} <= \
        set(DVC["submission"]["deps"])


PIPELINE_PARAMS = """
model: {num_layers: 1, model_dim: 32, num_heads: 2, num_kv_heads: 1}
tokenize: {vocab_size: 512, max_docs: 400}
train: {max_steps: 4, max_wallclock_seconds: 0, batch_tokens: 512, seq_len: 32, autocast: "off"}
average: {weights: []}
quantize: {keep_float_max_numel: 1024}
compress: {codec: zstd, level: 3}
eval: {seq_len: 128, batch_seqs: 32}
"""


def _dvc(repo: Path, *args: str) -> str:
    env = dict(os.environ, DVC_NO_ANALYTICS="1",
               PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    r = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def _ran(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def _changed(repo: Path) -> set[str]:
    """Stages `dvc status` reports as changed."""
    out = _dvc(repo, "status", "--json")
    return set(json.loads(out)) if out.strip() else set()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A copy of the project as a fresh clone sees it (code, dvc.yaml, .dvc), with tiny params."""
    repo = tmp_path_factory.mktemp("dvc") / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    for folder in ("stages", "golfcli", "studies"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (repo / ".dvc").mkdir()
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    (repo / "params.yaml").write_text(PIPELINE_PARAMS)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=repo, check=True)
    return repo


@pytest.mark.slow
def test_dvc_repro_caches_and_reruns_only_downstream(repo):
    assert _ran(_dvc(repo, "repro")) == set(SECTIONS_READ)
    assert (repo / "metrics/eval.json").is_file() and (repo / "models/model.golf").is_file()
    assert json.loads((repo / "metrics/audit.json").read_text())["passed"]
    assert (repo / "submission/train_gpt.py").stat().st_size == \
        json.loads((repo / "metrics/submission.json").read_text())["bytes_code"]
    assert _changed(repo) == set()  # clean right after repro (the seeds study is not scanned)
    assert _ran(_dvc(repo, "repro")) == set()

    with open(repo / "stages/codec/ans.py", "a") as f:
        f.write("# an edit to a codec\n")
    with open(repo / "golfcli/commands/inspect.py", "a") as f:
        f.write("# an edit to another command\n")
    # eval decodes blobs (ans among the codecs); nothing runs inspect; train and quantize stay.
    assert _changed(repo) == {"compress", "eval", "audit", "submission"}
    assert _ran(_dvc(repo, "repro")) == {"compress", "eval", "audit", "submission"}

    text = (repo / "params.yaml").read_text()
    text = text.replace("quantize: {keep_float_max_numel: 1024}",
                        "quantize: {keep_float_max_numel: 1024, bits: 6}")
    (repo / "params.yaml").write_text(text)
    assert _ran(_dvc(repo, "repro")) == {"quantize", "compress", "eval", "audit", "submission"}
    text = text.replace("codec: zstd, level: 3", "codec: lzma, level: 6")
    (repo / "params.yaml").write_text(text)
    assert _ran(_dvc(repo, "repro")) == {"compress", "eval", "audit", "submission"}
