"""dvc.yaml lists exactly what each stage runs, and the real pipeline caches as promised."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.import_graph import ROOT, command_closure

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
COMMAND_FUNCTIONS = {"tokenize": "tokenize", "train": "train", "average": "average",
                     "quantize": "quantize", "compress": "compress", "eval": "eval_",
                     "audit": "audit"}
SECTIONS_READ = {"tokenize": ["tokenize"], "train": ["model", "train"], "average": ["average"],
                 "quantize": ["quantize"], "compress": ["compress"], "eval": ["eval"],
                 "audit": ["eval"]}
# These count every code file toward the size limit, so they depend on the whole code tree.
WHOLE_TREE = ("compress", "audit")


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("stage", list(COMMAND_FUNCTIONS))
def test_code_deps_match_the_import_graph(stage):
    deps = [d for d in DVC[stage]["deps"] if d.startswith(("stages", "golfcli"))]
    needed = command_closure(COMMAND_FUNCTIONS[stage])
    missing = sorted(p for p in needed if not _covered(p, deps))
    assert not missing, f"{stage} runs {missing} but dvc.yaml does not list them"
    if stage not in WHOLE_TREE:
        extra = sorted(d for d in deps if not any(_covered(p, [d]) for p in needed))
        assert not extra, f"{stage} lists {extra} but never imports them"
    assert DVC[stage]["params"] == SECTIONS_READ[stage]
    assert DVC[stage]["cmd"].startswith(f"golf {stage} ")


def test_stages_chain_through_their_outputs():
    outs = {s: [o if isinstance(o, str) else next(iter(o)) for o in DVC[s].get("outs", [])]
            for s in DVC}
    order = list(DVC)
    assert order == ["tokenize", "train", "average", "quantize", "compress", "eval", "audit"]
    chain = order[:-1]
    for prev, stage in zip(chain, chain[1:], strict=False):
        assert set(outs[prev]) & set(DVC[stage]["deps"]), f"{stage} does not consume {prev}"
    # The audit checks what eval scored: the same blob and data.
    assert {"models/model.golf", "data/tokens"} <= set(DVC["audit"]["deps"])


PIPELINE_PARAMS = """
model: {vocab_size: 512, num_layers: 1, model_dim: 32, num_heads: 2, num_kv_heads: 1}
tokenize: {vocab_size: 512, max_docs: 400}
train: {max_steps: 4, max_wallclock_seconds: 0, batch_tokens: 512, seq_len: 32}
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


@pytest.mark.slow
def test_dvc_repro_caches_and_reruns_only_downstream(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    for folder in ("stages", "golfcli"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (repo / ".dvc").mkdir()
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    (repo / "params.yaml").write_text(PIPELINE_PARAMS)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=repo, check=True)

    assert _ran(_dvc(repo, "repro")) == set(COMMAND_FUNCTIONS)
    assert (repo / "metrics/eval.json").is_file() and (repo / "models/model.golf").is_file()
    assert json.loads((repo / "metrics/audit.json").read_text())["passed"]
    assert _ran(_dvc(repo, "repro")) == set()
    text = (repo / "params.yaml").read_text().replace("quantize: {keep_float_max_numel: 1024}",
                                                      "quantize: {keep_float_max_numel: 1024, bits: 6}")
    (repo / "params.yaml").write_text(text)
    assert _ran(_dvc(repo, "repro")) == {"quantize", "compress", "eval", "audit"}
    text = text.replace("codec: zstd, level: 3", "codec: lzma, level: 6")
    (repo / "params.yaml").write_text(text)
    assert _ran(_dvc(repo, "repro")) == {"compress", "eval", "audit"}
