"""`golf eval`: every validation target scored once with exact bytes, in every mode, from any
model file (checkpoint, quantized artifact or blob)."""

import json
import math
import shutil

import pytest
from click.testing import CliRunner

from golfcli.main import cli
from stages.codec.blob import pack
from stages.errors import GolfError
from stages.eval.evaluate import evaluate_path
from stages.eval.params import EvalParams


@pytest.fixture(scope="module")
def blob_path(tmp_path_factory, quantized_path):
    path = tmp_path_factory.mktemp("blob") / "model.golf"
    path.write_bytes(pack(quantized_path.read_bytes(), "zstd", level=3))
    return path


def test_every_target_scored_once_with_exact_bytes(tiny_run, data_dir):
    run, _ = tiny_run
    m = evaluate_path(run / "final.safetensors", data_dir, EvalParams(seq_len=50, batch_seqs=3))
    manifest = json.loads((data_dir / "manifest.json").read_text())
    assert m["tokens"] == manifest["val"]["tokens"] - 1
    assert m["bytes"] == manifest["val"]["text_bytes"]
    assert math.isclose(m["val_bpb"], m["val_loss"] / math.log(2) * m["tokens"] / m["bytes"])
    assert m["val_loss"] < math.log(400)  # trained, better than uniform


def test_window_length_does_not_change_the_target_set(tiny_run, data_dir):
    run, _ = tiny_run
    a = evaluate_path(run / "final.safetensors", data_dir, EvalParams(seq_len=64))
    b = evaluate_path(run / "final.safetensors", data_dir, EvalParams(seq_len=37, batch_seqs=5))
    assert a["tokens"] == b["tokens"] and a["bytes"] == b["bytes"]


def test_blob_scores_exactly_like_its_quantized_artifact(quantized_path, blob_path, data_dir):
    params = EvalParams(seq_len=64)
    q = evaluate_path(quantized_path, data_dir, params)
    b = evaluate_path(blob_path, data_dir, params)
    assert b["val_loss"] == q["val_loss"] and b["val_bpb"] == q["val_bpb"]
    assert b["model"]["kind"] == "blob/quantized" and q["model"]["kind"] == "quantized"
    assert b["model"]["payload_sha256"] == q["model"]["file_sha256"]


def test_quantized_int8_is_close_to_float(tiny_run, quantized_path, data_dir):
    run, _ = tiny_run
    params = EvalParams(seq_len=64)
    f = evaluate_path(run / "final.safetensors", data_dir, params)
    q = evaluate_path(quantized_path, data_dir, params)
    assert abs(q["val_bpb"] - f["val_bpb"]) < 0.01


def test_tokenizer_mismatch_is_refused(tmp_path, tiny_run, data_dir):
    run, _ = tiny_run
    other = tmp_path / "data"
    shutil.copytree(data_dir, other)
    (other / "tokenizer.model").write_bytes((other / "tokenizer.model").read_bytes() + b"\0")
    with pytest.raises(GolfError, match="trained with tokenizer"):
        evaluate_path(run / "final.safetensors", other, EvalParams())


def test_sliding_beats_chunked_and_scores_the_same_targets_and_bytes(tiny_run, data_dir):
    run, _ = tiny_run
    model = run / "final.safetensors"
    chunked = evaluate_path(model, data_dir, EvalParams(seq_len=64, batch_seqs=8))
    sliding = evaluate_path(model, data_dir, EvalParams(mode="sliding", seq_len=64, stride=16,
                                                        batch_seqs=8))
    isolated = evaluate_path(model, data_dir, EvalParams(mode="sliding", seq_len=64, stride=16,
                                                         batch_seqs=8, doc_isolated=True))
    manifest = json.loads((data_dir / "manifest.json").read_text())
    for m in (chunked, sliding, isolated):
        assert m["tokens"] == manifest["val"]["tokens"] - 1
        assert m["bytes"] == manifest["val"]["text_bytes"]
        assert m["eval_seconds"] >= 0 and m["tokens_per_s"] > 0
    assert sliding["val_loss"] < chunked["val_loss"]  # more context for most targets
    assert sliding["mode"] == "sliding" and sliding["params"]["stride"] == 16
    assert isolated["val_loss"] != sliding["val_loss"]  # the isolation changed what was seen


def test_progress_counts_every_window(tiny_run, data_dir):
    run, _ = tiny_run
    seen, total = [], []
    evaluate_path(run / "final.safetensors", data_dir,
                  EvalParams(mode="sliding", seq_len=64, stride=32, batch_seqs=5),
                  on_progress=seen.append, on_start=total.append)
    assert total and sum(seen) == total[0]


def test_cli_mode_option_overrides_the_params(tiny_run, data_dir, tmp_path):
    run, _ = tiny_run
    out = tmp_path / "m.json"
    args = ["eval", str(run / "final.safetensors"), "--data", str(data_dir), "--set", "seq_len=64"]
    r = CliRunner().invoke(cli, [*args, "--mode", "sliding", "--set", "stride=32", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "(sliding, " in r.output and json.loads(out.read_text())["mode"] == "sliding"
    for stride, message in (("0", "eval.stride must be >= 1, got 0"),
                            ("65", "eval.stride must be in [1, eval.seq_len = 64], got 65")):
        bad = CliRunner().invoke(cli, [*args, "--mode", "sliding", "--set", f"stride={stride}"])
        assert bad.exit_code == 1 and bad.output == f"Error: {message}\n"


def test_a_result_that_is_not_finite_is_an_error(tiny_run, data_dir, monkeypatch, tmp_path):
    """S1: a NaN val_loss was reported with exit status 0 and written as non-standard JSON."""
    from stages.eval import evaluate as evaluate_module

    real = evaluate_module.score_stream

    def nan_scores(*args, **kwargs):
        scores = real(*args, **kwargs)
        scores.nll[7] = float("nan")
        return scores

    monkeypatch.setattr(evaluate_module, "score_stream", nan_scores)
    run, _ = tiny_run
    r = CliRunner().invoke(cli, ["eval", str(run / "final.safetensors"), "--data", str(data_dir),
                                 "--set", "seq_len=64", "--out", str(tmp_path / "e.json")])
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines()[-1] == ("Error: val_loss is nan: the model's prediction "
                                                 "of target 7 is not finite")
    assert not (tmp_path / "e.json").exists()
