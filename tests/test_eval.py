import json
import math

import pytest

from stages.compress import pack
from stages.config import EvalParams
from stages.errors import GolfError
from stages.evaluate import evaluate_path


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
    import shutil

    run, _ = tiny_run
    other = tmp_path / "data"
    shutil.copytree(data_dir, other)
    (other / "tokenizer.model").write_bytes((other / "tokenizer.model").read_bytes() + b"\0")
    with pytest.raises(GolfError, match="trained with tokenizer"):
        evaluate_path(run / "final.safetensors", other, EvalParams())
