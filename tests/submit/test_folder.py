"""`golf submission`: the records folder, and the inputs it refuses without writing anything."""

import hashlib
import json

import pytest
from click.testing import CliRunner

from golfcli.main import cli
from golfcli.params import load_params
from stages.submit.bundle import build_bundle, run_params
from stages.submit.entry import SECTIONS
from tests.submit.test_bundle import TINY

CHECKS = ["causality", "normalisation", "score before update", "byte accounting", "size",
          "provenance", "document isolation"]


def _seed(folder, seed, val_bpb, model_bytes=90_000, tokens=12_353, passed=True, log_extra=""):
    """The three files a seed's run leaves: its log, eval metrics and audit result."""
    log = folder / f"s{seed}.log"
    log.write_text(f"golf 0.1.0 torch 2.13.0 device NVIDIA H100 world_size 8 data d tokenizer t\n"
                   f"stopped_by: max_wallclock_seconds steps: 4500 train_time:589000ms\n"
                   f"ledger: train_loop 589.000s [train]\nledger: eval 410.000s [eval]\n{log_extra}")
    (folder / f"s{seed}.eval.json").write_text(json.dumps({
        "val_loss": val_bpb * 1.7, "val_bpb": val_bpb, "tokens": tokens, "bytes": 18_150,
        "eval_seconds": 410.0, "mode": "chunked", "model": {"file_bytes": model_bytes}}))
    (folder / f"s{seed}.audit.json").write_text(json.dumps({
        "passed": passed, "mode": "chunked",
        "checks": [{"name": n, "passed": passed or n != "provenance", "detail": ""} for n in CHECKS]}))
    return [str(seed), str(log), str(folder / f"s{seed}.eval.json"),
            str(folder / f"s{seed}.audit.json")]


@pytest.fixture
def params(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(TINY)
    return path


def _submit(params, out, *runs):
    args = ["submission", "--out", str(out), "--params", str(params), "--name", "tiny"]
    for run in runs:
        args += ["--run", *run]
    return CliRunner().invoke(cli, args)


def test_the_folder_holds_what_the_challenge_asks_for(params, tmp_path):
    runs = [_seed(tmp_path, s, bpb) for s, bpb in ((1, 1.10), (2, 1.12), (3, 1.11))]
    r = _submit(params, tmp_path / "rec", *runs)
    assert r.exit_code == 0, r.output
    out = tmp_path / "rec"
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "requirements.txt", "submission.json", "train_gpt.py",
        "train_seed1.log", "train_seed2.log", "train_seed3.log"]
    bundle = build_bundle(run_params(load_params(params, SECTIONS)))
    assert (out / "train_gpt.py").read_bytes() == bundle.source
    doc = json.loads((out / "submission.json").read_text())
    assert doc["seeds"] == [1, 2, 3] and doc["val_bpb"] == pytest.approx(1.11)
    assert doc["val_bpb_std"] == pytest.approx(0.01)
    assert doc["bytes_code"] == len(bundle.source)
    assert doc["seed_results"]["2"]["artifact_bytes"] == 90_000 + len(bundle.source)
    assert doc["seed_results"]["1"]["steps"] == 4500
    assert doc["seed_results"]["1"]["step_avg_ms"] == pytest.approx(589000 / 4500, abs=0.01)
    assert doc["hardware"] == "8x NVIDIA H100" and doc["pytorch_version"] == "2.13.0"
    assert all(v is True for k, v in doc["compliance"].items() if k != "audited_by")
    assert (out / "train_seed1.log").read_text() == (tmp_path / "s1.log").read_text()
    requirements = (out / "requirements.txt").read_text()
    assert "torch==" in requirements and "safetensors==" in requirements
    assert "click" not in requirements and "dvc" not in requirements
    assert "1.11000" in (out / "README.md").read_text()


def _refused(result, out, *needles):
    assert result.exit_code == 1, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    for needle in needles:
        assert needle in result.output, result.output
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_bad_runs_are_refused_in_one_line_and_write_nothing(params, tmp_path):
    good = _seed(tmp_path, 1, 1.1)
    out = tmp_path / "rec"
    missing = [*good[:2], str(tmp_path / "nope.json"), good[3]]
    _refused(_submit(params, out, missing), out, "nope.json: no such file")
    other_data = _seed(tmp_path, 2, 1.1, tokens=999)
    _refused(_submit(params, out, good, other_data), out, "scored different validation data")
    failed = _seed(tmp_path, 3, 1.1, passed=False)
    _refused(_submit(params, out, good, failed), out, "the audit failed (provenance)")
    huge = _seed(tmp_path, 4, 1.1, model_bytes=15_999_000)
    _refused(_submit(params, out, huge), out, "is over 16,000,000")
    _refused(_submit(params, out, good, good), out, "seeds must differ")
    stale = _seed(tmp_path, 5, 1.1, log_extra="Code size: 123 bytes (train_gpt.py, sha256 "
                                              f"{hashlib.sha256(b'other').hexdigest()})\n")
    _refused(_submit(params, out, stale), out, "written by a train_gpt.py other than")


def test_an_existing_folder_with_files_is_never_written_over(params, tmp_path):
    out = tmp_path / "rec"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    r = _submit(params, out, _seed(tmp_path, 1, 1.1))
    assert r.exit_code == 1 and "not an empty folder" in r.output
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
