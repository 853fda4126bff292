"""Periodic validation (train.val_every): recorded, neutral to training, and the same numbers as
`golf eval --mode chunked` at the training sequence length."""

import json

import pytest
import torch
from click.testing import CliRunner

from golfcli.main import cli
from stages.model.gpt import build_model
from stages.train.loop import Hooks
from stages.train.params import TrainParams
from stages.train.validation import build_validator
from tests.conftest import TINY_TRAIN, run_train, same_tensors


def test_periodic_validation_is_recorded_and_leaves_training_untouched(data_dir):
    seen = []

    def validate(model):
        assert not model.training and torch.is_inference_mode_enabled()
        torch.rand(3)  # consumes torch RNG: training must not notice
        seen.append(1)
        return {"val_loss": 1.5}

    plain = run_train(data_dir, max_steps=6)
    validated = run_train(data_dir, max_steps=6, val_every=2, hooks=Hooks(validate=validate))
    assert len(seen) == 3
    assert same_tensors(plain.final.tensors, validated.final.tensors)
    assert same_tensors(plain.ema.tensors, validated.ema.tensors)
    assert [v["step"] for v in validated.metrics["validation"]] == [2, 4, 6]
    assert "validation" not in plain.metrics


def test_periodic_validation_equals_chunked_eval_at_the_training_length(tiny_run, tiny_checkpoint,
                                                                        data_dir, tmp_path):
    run, _ = tiny_run
    params = TrainParams(**TINY_TRAIN)
    model = build_model(tiny_checkpoint.model_config, tiny_checkpoint.tensors)
    with torch.inference_mode():
        during = build_validator(data_dir, params)(model.eval())
    out = tmp_path / "eval.json"
    r = CliRunner().invoke(cli, ["eval", str(run / "final.safetensors"), "--data", str(data_dir),
                                 "--mode", "chunked", "--set", f"seq_len={params.seq_len}",
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    after = json.loads(out.read_text())
    assert during["val_loss"] == pytest.approx(after["val_loss"], abs=1e-6)
    assert during["val_bpb"] == pytest.approx(after["val_bpb"], abs=1e-6)


def test_validation_scores_the_model_as_it_trains(tiny_checkpoint, data_dir):
    """The callback scores the model it is given in its current state (here: late QAT on)."""
    validate = build_validator(data_dir, TrainParams(**TINY_TRAIN))
    model = build_model(tiny_checkpoint.model_config, tiny_checkpoint.tensors).eval()
    with torch.inference_mode():
        plain = validate(model)
        model.set_qat(2)
        fake_quantized = validate(model)
    assert fake_quantized["val_loss"] > plain["val_loss"]

