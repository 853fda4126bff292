"""Optimizer variants (Muon NS coefficients, MuonEq-R, decoupled WD, AdamW groups) and schedules."""

import pytest
import torch

from stages.model.config import ModelConfig
from stages.model.gpt import build_model
from stages.params import ConfigError
from stages.train.optim import (
    NS_COEFFS,
    POLAR_EXPRESS_COEFFS,
    Muon,
    build_optimizers,
    lr_scale,
    muon_momentum,
    newton_schulz,
    ns_coefficients,
    row_normalize,
    schedule_progress,
)
from stages.train.params import TrainParams
from tests.conftest import TINY_MODEL


def test_polar_express_repeats_its_last_tuple_and_classic_is_constant():
    assert ns_coefficients("classic", 3) == [NS_COEFFS] * 3
    pe = ns_coefficients("polar_express", 7)
    assert pe[:5] == list(POLAR_EXPRESS_COEFFS) and pe[5] == pe[6] == POLAR_EXPRESS_COEFFS[-1]


def test_newton_schulz_orthogonalises_and_polar_express_does_it_tighter():
    torch.manual_seed(0)
    for shape in ((32, 64), (64, 32)):  # wide and tall
        s = torch.linalg.svdvals(newton_schulz(torch.randn(shape), steps=5).float())
        assert s.min() > 0.5 and s.max() < 1.5  # singular values pushed towards 1
    g = torch.randn(32, 64) @ torch.diag(torch.logspace(-2, 0, 64))  # ill-conditioned
    spread = {}
    for variant in ("classic", "polar_express"):
        s = torch.linalg.svdvals(newton_schulz(g, steps=5, variant=variant).float())
        spread[variant] = (s.max() - s.min()).item()
    # Classic NS leaves singular values in roughly [0.7, 1.2]; Polar Express is built to do better.
    assert spread["polar_express"] < spread["classic"]


def test_row_normalize_gives_unit_rows_and_survives_zero_rows():
    u = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    out = row_normalize(u)
    assert torch.allclose(out[0], torch.tensor([0.6, 0.8])) and torch.equal(out[1], torch.zeros(2))


def test_muon_decoupled_weight_decay_shrinks_before_the_update():
    torch.manual_seed(0)
    w0 = torch.randn(8, 16)
    grads = torch.randn(8, 16)
    updated = {}
    for wd in (0.0, 0.5):
        p = torch.nn.Parameter(w0.clone())
        p.grad = grads.clone()
        Muon([p], lr=0.1, momentum=0.9, backend_steps=5, weight_decay=wd).step()
        updated[wd] = p.detach()
    # Same orthogonalised step; the decayed run differs by exactly the shrink lr * wd * W0.
    assert torch.allclose(updated[0.0] - updated[0.5], 0.1 * 0.5 * w0, atol=1e-6)


def test_muon_row_normalize_changes_the_update():
    torch.manual_seed(0)
    g = torch.randn(8, 16) * torch.logspace(-3, 0, 8)[:, None]  # rows of very different norms
    steps = []
    for rn in (False, True):
        p = torch.nn.Parameter(torch.zeros(8, 16))
        p.grad = g.clone()
        Muon([p], lr=1.0, momentum=0.0, backend_steps=5, row_normalize=rn).step()
        steps.append(p.detach().norm(dim=1))
    # Without it the tiny rows barely move; with it every row gets a comparable step.
    assert steps[0].min() < 0.5 * steps[1].min()


def _adam_step_weights(params: TrainParams) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(ModelConfig(**TINY_MODEL))
    opts = build_optimizers(model, params)
    x = torch.randint(0, TINY_MODEL["vocab_size"], (2, 16))
    for _ in range(3):
        for opt in opts:
            opt.zero_grad()
        model.loss(x, x).backward()
        opts[0].step()  # the AdamW groups only
    return [p.detach().clone() for p in model.parameters()]


def test_adamw_at_zero_decay_is_exactly_the_baseline_adam(monkeypatch):
    ours = _adam_step_weights(TrainParams())
    real_adamw = torch.optim.AdamW

    def plain_adam(groups, **kw):
        no_wd = [{k: v for k, v in g.items() if k != "weight_decay"} for g in groups]
        return torch.optim.Adam(no_wd, **kw)

    monkeypatch.setattr(torch.optim, "AdamW", plain_adam)
    baseline = _adam_step_weights(TrainParams())
    monkeypatch.setattr(torch.optim, "AdamW", real_adamw)
    assert all(torch.equal(a, b) for a, b in zip(ours, baseline, strict=True))
    decayed = _adam_step_weights(TrainParams(embed_wd=0.5, scalar_wd=0.5))
    assert not all(torch.equal(a, b) for a, b in zip(ours, decayed, strict=True))


def test_optimizer_groups_carry_their_weight_decays():
    p = TrainParams(muon_wd=0.09, embed_wd=0.085, scalar_wd=0.02, muon_ns="polar_express",
                    muon_row_normalize=True)
    adam, muon = build_optimizers(build_model(ModelConfig(**TINY_MODEL)), p)
    assert [g["weight_decay"] for g in adam.param_groups] == [0.085, 0.02]
    g = muon.param_groups[0]
    assert (g["weight_decay"], g["ns"], g["row_normalize"]) == (0.09, "polar_express", True)


@pytest.mark.parametrize("schedule, step, elapsed, expected", [
    ("auto", 50, 10.0, 0.5),      # steps ahead of time
    ("auto", 10, 80.0, 0.8),      # time ahead of steps
    ("steps", 10, 80.0, 0.1),     # the clock is ignored
    ("wallclock", 90, 20.0, 0.2),  # the step count is ignored
])
def test_schedule_progress(schedule, step, elapsed, expected):
    p = TrainParams(schedule=schedule, max_steps=100, max_wallclock_seconds=100.0)
    assert schedule_progress(step, elapsed, p) == pytest.approx(expected)


def test_warmdown_is_flat_then_linear_then_floored():
    p = TrainParams(warmdown_frac=0.4, min_lr_frac=0.1)
    assert lr_scale(0.0, p) == lr_scale(0.59, p) == 1.0
    assert lr_scale(0.8, p) == pytest.approx(0.5)
    assert lr_scale(0.99, p) == pytest.approx(0.1)
    assert lr_scale(0.99, TrainParams(warmdown_frac=0.0)) == 1.0


def test_muon_momentum_warms_up_linearly():
    p = TrainParams(muon_momentum=0.95, muon_momentum_warmup_start=0.85,
                    muon_momentum_warmup_steps=10)
    assert muon_momentum(0, p) == pytest.approx(0.85)
    assert muon_momentum(5, p) == pytest.approx(0.90)
    assert muon_momentum(10, p) == muon_momentum(1000, p) == pytest.approx(0.95)


def test_lr_scale_of_each_schedule_warms_down_on_its_own_clock():
    kw = dict(max_steps=100, max_wallclock_seconds=100.0, warmdown_frac=0.5, min_lr_frac=0.1)
    scale = {s: lr_scale(schedule_progress(75, 10.0, TrainParams(schedule=s, **kw)),
                         TrainParams(schedule=s, **kw)) for s in ("auto", "steps", "wallclock")}
    assert scale["steps"] == scale["auto"] == pytest.approx(0.5)  # 75 % of the steps
    assert scale["wallclock"] == 1.0  # only 10 % of the time: still flat
    p = TrainParams(schedule="wallclock", **kw)
    assert lr_scale(schedule_progress(0, 99.0, p), p) == pytest.approx(0.1)  # floored


def test_wallclock_schedule_needs_a_wallclock_cap():
    with pytest.raises(ConfigError, match="train.schedule=wallclock needs"):
        TrainParams(schedule="wallclock", max_wallclock_seconds=0)
    with pytest.raises(ConfigError, match="train.muon_ns must be one of"):
        TrainParams(muon_ns="fast")


@pytest.mark.parametrize("native", [True, False])
def test_newton_schulz_runs_in_bf16_only_where_bf16_is_native(native, monkeypatch):
    """On a CPU that emulates bf16 (a matmul ~70x slower than fp32) Muon orthogonalises in fp32;
    where bf16 is native it keeps the records' bf16 iteration."""
    from stages.train import optim

    monkeypatch.setattr(optim, "native_bf16", lambda device: native)
    model = build_model(ModelConfig(**TINY_MODEL))
    muon = build_optimizers(model, TrainParams())[1]
    assert {g["ns_dtype"] for g in muon.param_groups} == {"bf16" if native else "fp32"}
    seen = []
    monkeypatch.setattr(optim, "newton_schulz", lambda g, *a, **kw: seen.append(kw["dtype"]) or g)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    muon.step()
    assert seen and set(seen) == {"bf16" if native else "fp32"}

