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


def test_swa_snapshots_feed_golf_average(data_dir, tmp_path):
    from click.testing import CliRunner

    from golfcli.main import cli
    from stages import artifacts

    params = tmp_path / "p.yaml"
    params.write_text(
        "model: {vocab_size: 400, num_layers: 2, model_dim: 64, num_heads: 4, num_kv_heads: 2}\n"
        "train: {max_steps: 8, max_wallclock_seconds: 0, batch_tokens: 512, seq_len: 64,\n"
        "        warmdown_frac: 0.5, swa_every: 2, swa_lr_scale: 0.8}\n")
    run = tmp_path / "run"
    (run / "swa").mkdir(parents=True)
    (run / "swa" / "step_999999.safetensors").write_bytes(b"stale")  # from an earlier run
    r = CliRunner().invoke(cli, ["train", str(data_dir), "--out", str(run), "--params", str(params)])
    assert r.exit_code == 0, r.output
    snaps = sorted(p.name for p in (run / "swa").iterdir())
    # LR scale < 0.8 from progress 0.6 on (steps 6..8 of 8): snapshots after steps 6 and 8.
    assert snaps == ["step_000006.safetensors", "step_000008.safetensors"]
    last = artifacts.load(run / "swa" / snaps[-1], expect="checkpoint")
    final = artifacts.load(run / "final.safetensors")
    assert all(torch.equal(last.tensors[k], final.tensors[k]) for k in final.tensors)
    assert last.provenance["weights"] == "swa:8"
    r = CliRunner().invoke(cli, ["average", *(str(run / "swa" / s) for s in snaps),
                                 str(run / "ema.safetensors"), "--out", str(tmp_path / "t.st")])
    assert r.exit_code == 0, r.output
