import pytest
import torch

from stages.config import ModelConfig, TrainParams
from stages.data import load_val_tokens
from stages.optim import lr_scale, newton_schulz
from stages.train import train
from tests.conftest import TINY_MODEL, TINY_TRAIN


def test_loss_really_falls_and_ema_is_its_own_checkpoint(tiny_run):
    _, result = tiny_run
    m = result.metrics
    assert m["steps"] == TINY_TRAIN["max_steps"] and m["stopped_by"] == "max_steps"
    assert m["final_train_loss"] < 0.75 * torch.log(torch.tensor(400.0)).item()  # from ~5.77
    assert result.final.kind == result.ema.kind == "checkpoint"
    assert result.final.tensors.keys() == result.ema.tensors.keys()
    diff = sum((result.final.tensors[k] - result.ema.tensors[k]).abs().sum().item()
               for k in result.final.tensors)
    assert diff > 0
    assert result.final.params["train"]["max_steps"] == TINY_TRAIN["max_steps"]


def test_validation_tokens_cannot_be_trained_on(data_dir):
    with pytest.raises(TypeError, match="TrainTokens only"):
        train(load_val_tokens(data_dir), ModelConfig(**TINY_MODEL), TrainParams(**TINY_TRAIN),
              parents={}, provenance={})


def test_wallclock_cap_stops_the_run(data_dir):
    from stages.data import load_train_tokens

    params = TrainParams(**{**TINY_TRAIN, "max_steps": 10_000, "max_wallclock_seconds": 1.0})
    result = train(load_train_tokens(data_dir), ModelConfig(**TINY_MODEL), params, parents={},
                   provenance={})
    assert result.metrics["stopped_by"] == "max_wallclock_seconds"
    assert 1 <= result.metrics["steps"] < 10_000 and result.metrics["train_seconds"] < 5


def test_same_seed_same_weights(data_dir):
    from stages.data import load_train_tokens

    params = TrainParams(**{**TINY_TRAIN, "max_steps": 3})
    runs = [train(load_train_tokens(data_dir), ModelConfig(**TINY_MODEL), params, parents={},
                  provenance={}) for _ in range(2)]
    for k, v in runs[0].final.tensors.items():
        assert torch.equal(v, runs[1].final.tensors[k]), k


def test_warmdown_schedule():
    p = TrainParams(warmdown_frac=0.4, min_lr_frac=0.1)
    assert lr_scale(0.0, p) == lr_scale(0.59, p) == 1.0
    assert lr_scale(0.8, p) == pytest.approx(0.5)
    assert lr_scale(0.99, p) == pytest.approx(0.1)


def test_newton_schulz_orthogonalises():
    torch.manual_seed(0)
    g = torch.randn(32, 64)
    x = newton_schulz(g, steps=5).float()
    s = torch.linalg.svdvals(x)
    assert s.min() > 0.5 and s.max() < 1.5  # singular values pushed towards 1
