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


# --- record-stack options of the loop ------------------------------------------------------------

def _train(data_dir, **overrides):
    from stages.data import load_train_tokens

    kw = overrides.pop("kw", {})
    return train(load_train_tokens(data_dir), overrides.pop("model", ModelConfig(**TINY_MODEL)),
                 TrainParams(**{**TINY_TRAIN, "max_steps": 8, **overrides}), parents={},
                 provenance={}, **kw)


def _same(a, b) -> bool:
    return all(torch.equal(v, b.tensors[k]) for k, v in a.tensors.items())


def test_accumulated_micro_batches_give_the_one_batch_update(data_dir):
    one, accumulated = (_train(data_dir, max_steps=1, autocast="off", grad_accum_steps=k)
                        for k in (1, 4))
    assert one.metrics["final_train_loss"] == pytest.approx(accumulated.metrics["final_train_loss"],
                                                            rel=1e-5)
    for name, w in one.final.tensors.items():
        torch.testing.assert_close(accumulated.final.tensors[name], w, atol=1e-4, rtol=0, msg=name)


def test_late_qat_turns_on_once_when_the_lr_scale_drops(data_dir, monkeypatch):
    from stages.model import GPT

    calls = []
    monkeypatch.setattr(GPT, "set_qat", lambda self, bits, clip_sigmas=0.0:
                        calls.append((bits, clip_sigmas)), raising=False)
    # 8 steps, warmdown over the last half: scale at step s is (8 - s) / 4, below 0.6 from step 6.
    result = _train(data_dir, warmdown_frac=0.5, qat_bits=6, qat_lr_scale=0.6, qat_clip_sigmas=12.0)
    assert calls == [(6, 12.0)]
    assert result.metrics["qat_enabled_step"] == 6


def test_late_qat_really_changes_the_training_forward_pass(data_dir):
    """End to end, through the real model: the loss trace is identical to a run without QAT up to
    the step QAT turns on, and differs from then on (a dropped switch would leave it identical)."""
    def losses(**kw):
        seen = []
        _train(data_dir, warmdown_frac=0.5, autocast="off",
               kw={"on_step": lambda info: seen.append(info.loss)}, **kw)
        return seen

    plain, qat = losses(), losses(qat_bits=3, qat_lr_scale=0.6)
    # Steps 0-5 run before the switch (their losses are entries 0-5): bit-identical.
    assert qat[:6] == plain[:6]
    assert all(a != b for a, b in zip(qat[6:], plain[6:], strict=True))


def test_qat_off_never_calls_the_model(data_dir, monkeypatch):
    from stages.model import GPT

    monkeypatch.setattr(GPT, "set_qat", lambda *a: pytest.fail("set_qat called"), raising=False)
    assert "qat_enabled_step" not in _train(data_dir, max_steps=2).metrics


def test_looped_layers_turn_on_at_loop_enable_at(data_dir, monkeypatch):
    from stages.model import GPT

    calls = []
    real = GPT.set_looping

    def recording(self, on):
        calls.append(on)
        real(self, on)

    monkeypatch.setattr(GPT, "set_looping", recording)
    looped = ModelConfig(**TINY_MODEL, loop_start=1, loop_end=1, num_loops=1)
    result = _train(data_dir, model=looped, loop_enable_at=0.5, schedule="steps")
    # True when built (a fresh model is looped), False from the start, True at half the steps.
    assert calls == [True, False, True] and result.metrics["looping_enabled_step"] == 4
    calls.clear()
    _train(data_dir, max_steps=2)  # no looping in the model: never switched off
    assert calls == [False]  # only the constructor's call: a model without loops stays plain


def test_periodic_validation_is_recorded_and_leaves_training_untouched(data_dir):
    seen = []

    def validate(model):
        assert not model.training and torch.is_inference_mode_enabled()
        torch.rand(3)  # consumes torch RNG: training must not notice
        seen.append(1)
        return {"val_loss": 1.5}

    plain = _train(data_dir, max_steps=6)
    validated = _train(data_dir, max_steps=6, val_every=2, kw={"validate": validate})
    assert len(seen) == 3 and _same(plain.final, validated.final) and _same(plain.ema, validated.ema)
    assert [v["step"] for v in validated.metrics["validation"]] == [2, 4, 6]


class _Interrupt(Exception):
    pass


def test_interrupted_and_resumed_run_ends_where_an_uninterrupted_run_does(data_dir, tmp_path):
    from stages import resume

    base = dict(schedule="steps", checkpoint_every=3, swa_every=0)
    whole = _train(data_dir, **base, kw={"resume_dir": tmp_path / "a"})
    assert not (tmp_path / "a").exists()  # a finished run drops its resume state

    def crash(info):
        if info.step == 5:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        _train(data_dir, **base, kw={"resume_dir": tmp_path / "b", "on_step": crash})
    assert (tmp_path / "b" / resume.STATE_FILE).is_file()  # saved after step 3
    resumed = _train(data_dir, **base, kw={"resume_dir": tmp_path / "b", "resume": True})
    assert resumed.metrics["steps"] == whole.metrics["steps"] == 8
    assert resumed.metrics["final_train_loss"] == whole.metrics["final_train_loss"]
    assert _same(whole.final, resumed.final) and _same(whole.ema, resumed.ema)


def test_resume_refuses_other_params(data_dir, tmp_path):
    from stages.resume import ResumeError

    def crash(info):
        raise _Interrupt

    with pytest.raises(_Interrupt):
        _train(data_dir, schedule="steps", checkpoint_every=1, kw={"resume_dir": tmp_path,
                                                                     "on_step": crash})
    with pytest.raises(ResumeError, match="different train.matrix_lr"):
        _train(data_dir, schedule="steps", checkpoint_every=1, matrix_lr=0.5,
               kw={"resume_dir": tmp_path, "resume": True})


def test_cli_resume_validation_and_live_curves(data_dir, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from golfcli.main import cli
    from stages import artifacts
    from stages.livelog import LiveLog

    params = tmp_path / "p.yaml"
    params.write_text(
        "model: {vocab_size: 400, num_layers: 2, model_dim: 64, num_heads: 4, num_kv_heads: 2}\n"
        "train: {max_steps: 6, max_wallclock_seconds: 0, batch_tokens: 512, seq_len: 64,\n"
        "        schedule: steps, checkpoint_every: 2, val_every: 3, log_every: 2}\n")

    def golf(run, *extra):
        return CliRunner().invoke(cli, ["train", str(data_dir), "--out", str(tmp_path / run),
                                        "--params", str(params), *extra])

    assert golf("whole").exit_code == 0
    r = golf("cut", "--resume")
    assert r.exit_code == 1 and "no resume state" in r.output
    real_log_step = LiveLog.log_step

    def crash_at_5(self, step, *a):
        if step == 5:
            raise KeyboardInterrupt
        real_log_step(self, step, *a)

    monkeypatch.setattr(LiveLog, "log_step", crash_at_5)
    assert golf("cut").exit_code != 0
    monkeypatch.setattr(LiveLog, "log_step", real_log_step)
    r = golf("cut", "--resume", "--set", "matrix_lr=0.5")
    assert r.exit_code == 1 and "different train.matrix_lr" in r.output
    assert golf("cut", "--resume").exit_code == 0
    for name in ("final", "ema"):
        a, b = (artifacts.load(tmp_path / run / f"{name}.safetensors") for run in ("whole", "cut"))
        assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors), name
    assert not (tmp_path / "cut" / "resume").exists()
    curves = tmp_path / "whole" / "live" / "plots" / "metrics"
    assert [line.split("\t")[0] for line in (curves / "train" / "loss.tsv").read_text().split()
            [2::2]] == ["2", "4", "6"]  # header "step loss", then a row every log_every steps
    assert (curves / "val" / "bpb.tsv").read_text().count("\n") == 3  # header + steps 3 and 6
    metrics = (tmp_path / "whole" / "train_metrics.json").read_text()
    assert '"val_bpb"' in metrics


def test_resume_fingerprint_ignores_only_keys_that_cannot_change_weights():
    from stages.config import to_dict
    from stages.resume import differing_keys, fingerprint

    def fp(**kw):
        return fingerprint({"model": to_dict(ModelConfig(**TINY_MODEL)),
                            "train": to_dict(TrainParams(**kw))}, ["sha256:a"])

    assert differing_keys(fp(), fp(val_every=5, log_every=3, checkpoint_every=7)) == []
    assert differing_keys(fp(), fp(seed=1)) == ["train.seed"]
    other_data = fingerprint({"model": {}, "train": {}}, ["sha256:b"])
    assert "train_shards" in differing_keys(fp(), other_data)
