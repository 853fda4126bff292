"""The training loop: caps, seeding, accumulation, and the late switches of the record stacks (QAT,
looped layers), each through the real model."""

import pytest
import torch

from stages.data.shards import load_val_tokens
from stages.errors import GolfError
from stages.model.config import ModelConfig
from stages.model.gpt import GPT
from stages.train.loop import Hooks, train
from stages.train.params import TrainParams
from tests.conftest import TINY_MODEL, TINY_TRAIN, run_train, same_tensors


def test_loss_really_falls_and_ema_is_its_own_checkpoint(tiny_run):
    _, result = tiny_run
    m = result.metrics
    assert m["steps"] == TINY_TRAIN["max_steps"] and m["stopped_by"] == "max_steps"
    assert m["final_train_loss"] < 0.75 * torch.log(torch.tensor(400.0)).item()  # from ~5.99
    assert result.final.kind == result.ema.kind == "checkpoint"
    assert result.final.tensors.keys() == result.ema.tensors.keys()
    assert not same_tensors(result.final.tensors, result.ema.tensors)
    assert result.final.params["train"]["max_steps"] == TINY_TRAIN["max_steps"]
    assert result.final.provenance["weights"] == "final"
    assert result.ema.provenance["weights"] == f"ema:{TINY_TRAIN['ema_decay']}"


def test_validation_tokens_cannot_be_trained_on(data_dir):
    with pytest.raises(TypeError, match="TrainTokens only"):
        train(load_val_tokens(data_dir), ModelConfig(**TINY_MODEL), TrainParams(**TINY_TRAIN),
              parents={}, provenance={})


def test_resume_needs_a_directory(data_dir):
    with pytest.raises(GolfError, match="need a resume directory"):
        run_train(data_dir, checkpoint_every=2)


def test_wallclock_cap_stops_the_run(data_dir):
    result = run_train(data_dir, max_steps=10_000, max_wallclock_seconds=1.0)
    assert result.metrics["stopped_by"] == "max_wallclock_seconds"
    assert 1 <= result.metrics["steps"] < 10_000 and result.metrics["train_seconds"] < 5


def test_same_seed_same_weights_other_seed_other_weights(data_dir):
    a, b, c = (run_train(data_dir, max_steps=3, seed=s) for s in (0, 0, 1))
    assert same_tensors(a.final.tensors, b.final.tensors)
    assert not same_tensors(a.final.tensors, c.final.tensors)


def test_accumulated_micro_batches_give_the_one_batch_update(data_dir):
    one, accumulated = (run_train(data_dir, max_steps=1, grad_accum_steps=k) for k in (1, 4))
    assert one.metrics["final_train_loss"] == pytest.approx(accumulated.metrics["final_train_loss"],
                                                            rel=1e-5)
    for name, w in one.final.tensors.items():
        torch.testing.assert_close(accumulated.final.tensors[name], w, atol=1e-4, rtol=0, msg=name)


def test_late_qat_turns_on_once_when_the_lr_scale_drops(data_dir, monkeypatch):
    calls = []
    monkeypatch.setattr(GPT, "set_qat", lambda self, bits, clip_sigmas=0.0:
                        calls.append((bits, clip_sigmas)))
    # 8 steps, warmdown over the last half: scale at step s is (8 - s) / 4, below 0.6 from step 6.
    result = run_train(data_dir, warmdown_frac=0.5, qat_bits=6, qat_lr_scale=0.6,
                       qat_clip_sigmas=12.0)
    assert calls == [(6, 12.0)]
    assert result.metrics["qat_enabled_step"] == 6


def test_late_qat_really_changes_the_training_forward_pass(data_dir):
    """End to end, through the real model: the loss trace is identical to a run without QAT up to
    the step QAT turns on, and differs from then on (a dropped switch would leave it identical)."""
    def losses(**kw):
        seen = []
        run_train(data_dir, warmdown_frac=0.5, hooks=Hooks(on_step=lambda i: seen.append(i.loss)),
                  **kw)
        return seen

    plain, qat = losses(), losses(qat_bits=3, qat_lr_scale=0.6)
    # Steps 0-5 run before the switch (their losses are entries 0-5): bit-identical.
    assert qat[:6] == plain[:6]
    assert all(a != b for a, b in zip(qat[6:], plain[6:], strict=True))


def test_qat_off_never_calls_the_model(data_dir, monkeypatch):
    monkeypatch.setattr(GPT, "set_qat", lambda *a: pytest.fail("set_qat called"))
    assert "qat_enabled_step" not in run_train(data_dir, max_steps=2).metrics


def test_looped_layers_turn_on_at_loop_enable_at(data_dir, monkeypatch):
    calls = []
    real = GPT.set_looping

    def recording(self, on):
        calls.append(on)
        real(self, on)

    monkeypatch.setattr(GPT, "set_looping", recording)
    looped = ModelConfig(**TINY_MODEL, loop_start=1, loop_end=1, num_loops=1)
    result = run_train(data_dir, model=looped, loop_enable_at=0.5, schedule="steps")
    # True when built (a fresh model is looped), False from the start, True at half the steps.
    assert calls == [True, False, True] and result.metrics["looping_enabled_step"] == 4
    calls.clear()
    run_train(data_dir, max_steps=2)  # no looping in the model: never switched off
    assert calls == [False]  # only the constructor's call: a model without loops stays plain


@pytest.mark.parametrize("native", [True, False])
def test_autocast_auto_is_bf16_only_where_bf16_is_native(native, monkeypatch, data_dir):
    from stages.train import loop

    monkeypatch.setattr(loop, "native_bf16", lambda device: native)
    assert loop.uses_bf16("auto", torch.device("cpu")) is native
    assert loop.uses_bf16("bf16", torch.device("cpu")) and not loop.uses_bf16("off",
                                                                            torch.device("cpu"))
    metrics = run_train(data_dir, max_steps=1, autocast="auto").metrics
    assert metrics["autocast"] == ("bf16" if native else "off")


def _bf16_exact(t: torch.Tensor) -> bool:
    return torch.equal(t, t.bfloat16().float())


def test_embed_bf16_keeps_the_table_and_its_adam_moments_in_bf16(data_dir, monkeypatch):
    import stages.train.loop as loop
    sessions = []
    start = loop.start_session

    def keep(*args):
        sessions.append(start(*args))
        return sessions[-1]
    monkeypatch.setattr(loop, "start_session", keep)
    stored = run_train(data_dir, max_steps=3, embed_bf16=True)
    table = sessions[-1].model.tok_emb.weight
    adam = sessions[-1].optimizers[0].state[table]
    assert _bf16_exact(stored.final.tensors["tok_emb.weight"])
    assert _bf16_exact(adam["exp_avg"]) and _bf16_exact(adam["exp_avg_sq"])
    assert not _bf16_exact(stored.final.tensors["blocks.0.attn.c_q.weight"])  # only the table
    plain = run_train(data_dir, max_steps=3)
    assert not _bf16_exact(plain.final.tensors["tok_emb.weight"])
