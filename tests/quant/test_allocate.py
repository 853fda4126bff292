"""Row steps by loss sensitivity (quantize.fisher_alpha): the equal-loss-per-bit rule, its bounds,
the Fisher it reads, and quantize runs that use it."""

import math

import pytest
import torch

from stages.model.gpt import build_model
from stages.quant import allocate
from stages.quant.allocate import ROW_FISHER, collect_row_fisher, row_multipliers
from stages.quant.calibrate import calibrate, calibration_steps
from stages.quant.params import QuantizeParams
from stages.quant.quantize import quantize
from stages.quant.registry import QuantizeError

CALIB = {"method": "rtn", "grid": "sdclip", "bits": 6, "calib_batches": 2, "calib_batch_seqs": 4,
         "calib_seq_len": 64, "keep_float_max_numel": 1024}


def _rows(fisher: list[float], cols: int = 8, clip: float = 1.0):
    """One tensor whose rows share clip and spread and differ only in their Fisher."""
    w = torch.linspace(-1, 1, cols).repeat(len(fisher), 1)  # (rows, cols), std ~0.6 per row
    return ({"t": (torch.full((len(fisher),), clip), 31, w)},
            {"t" + ROW_FISHER: torch.tensor(fisher)})


def test_steps_scale_as_one_over_root_fisher_around_the_grid_mean():
    rows, fisher = _rows([1.0, 4.0, 16.0, 64.0])
    m = row_multipliers(rows, fisher, alpha=1.0, clamp=100.0, min_sigmas=0.0)["t"]
    assert torch.allclose(m[:-1] / m[1:], torch.full((3,), 2.0))  # 4x the Fisher: half the step
    assert math.isclose(m.log().mean().item(), 0.0, abs_tol=1e-6)  # the mean step is the grid's
    half = row_multipliers(rows, fisher, alpha=0.5, clamp=100.0, min_sigmas=0.0)["t"]
    assert torch.allclose(half, m.sqrt())  # alpha moves part way, geometrically


def test_the_mean_is_weighted_by_row_length_across_tensors():
    rows = {"short": (torch.ones(1), 31, torch.randn(1, 4)),
            "long": (torch.ones(1), 31, torch.randn(1, 12))}
    fisher = {"short" + ROW_FISHER: torch.tensor([1.0]), "long" + ROW_FISHER: torch.tensor([16.0])}
    m = row_multipliers(rows, fisher, alpha=1.0, clamp=100.0, min_sigmas=0.0)
    # 4 weights at log m_s and 12 at log m_s - log 4 average to zero
    assert math.isclose(4 * m["short"].log().item() + 12 * m["long"].log().item(), 0.0,
                        abs_tol=1e-5)
    assert math.isclose((m["short"] / m["long"]).item(), 4.0, rel_tol=1e-6)


def test_a_finer_grid_step_gets_a_larger_multiplier():
    # Same Fisher, the grid's clip half as wide on the second tensor: the rule's step is the same,
    # so that tensor's multiplier doubles.
    w = torch.randn(2, 8)
    rows = {"a": (torch.ones(2), 31, w), "b": (torch.full((2,), 0.5), 31, w)}
    fisher = {"a" + ROW_FISHER: torch.ones(2), "b" + ROW_FISHER: torch.ones(2)}
    m = row_multipliers(rows, fisher, alpha=1.0, clamp=100.0, min_sigmas=0.0)
    assert torch.allclose(m["b"] / m["a"], torch.full((2,), 2.0))


def test_multipliers_stay_in_the_clamp_and_no_clip_under_min_sigmas():
    rows, fisher = _rows([1e-6, 1.0, 1e6])
    m = row_multipliers(rows, fisher, alpha=1.0, clamp=4.0, min_sigmas=0.0)["t"]
    assert m.max().item() == pytest.approx(4.0) and m.min().item() == pytest.approx(0.25)
    std = rows["t"][2].std(dim=1, unbiased=False)
    floored = row_multipliers(rows, fisher, alpha=1.0, clamp=4.0, min_sigmas=3.0)["t"]
    assert (floored * 1.0 >= 3.0 * std - 1e-6).all()  # clip = 1.0 * m, never under 3 stds
    assert floored[0] == m[0]  # a row already coarse is left alone


def test_rows_the_loss_never_moves_get_the_coarsest_step_and_leave_the_mean_alone():
    rows, fisher = _rows([1.0, 4.0])
    with_dead, dead_fisher = _rows([1.0, 4.0, 0.0])
    m = row_multipliers(rows, fisher, alpha=1.0, clamp=8.0, min_sigmas=0.0)["t"]
    d = row_multipliers(with_dead, dead_fisher, alpha=1.0, clamp=8.0, min_sigmas=0.0)["t"]
    assert torch.allclose(d[:2], m) and d[2].item() == pytest.approx(8.0)
    assert torch.isfinite(d).all()


def test_row_fisher_is_the_mean_squared_pass_gradient_per_row(tiny_checkpoint):
    model = build_model(tiny_checkpoint.model_config, tiny_checkpoint.tensors)
    vocab = tiny_checkpoint.model_config.vocab_size
    batches = [torch.randint(0, vocab, (seqs, 17), generator=torch.Generator().manual_seed(s))
               for s, seqs in enumerate([2, 3, allocate.MICRO_SEQS + 2])]  # the last: two passes
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    seen = []
    fisher = collect_row_fisher(model, batches, seen.append)
    assert len(seen) == 3  # progress by calibration batch
    params = dict(model.named_parameters())
    assert fisher.keys() == {n + ROW_FISHER for n in params}
    expect = {n: torch.zeros(fisher[n + ROW_FISHER].numel(), dtype=torch.float64) for n in params}
    passes = [x for b in batches for x in b.split(allocate.MICRO_SEQS)]
    for x in passes:  # each pass's own gradient, not one accumulated over the passes
        grads = torch.autograd.grad(model.loss(x[:, :-1], x[:, 1:]), list(params.values()),
                                    allow_unused=True)
        for (n, p), g in zip(params.items(), grads, strict=True):
            if g is not None:
                expect[n] += g.double().square().reshape(expect[n].numel(), -1).mean(dim=1) \
                    / len(passes)
    for n, p in params.items():
        assert fisher[n + ROW_FISHER].shape == (p.size(0) if p.ndim >= 2 else 1,)
        assert torch.allclose(fisher[n + ROW_FISHER].double(), expect[n], rtol=1e-4, atol=1e-20), n
        assert torch.equal(p.detach(), before[n]) and p.grad is None  # the model is left as it was


def test_calibration_gathers_the_fisher_only_when_asked(data_dir, tiny_checkpoint):
    on = QuantizeParams(**CALIB, fisher_alpha=1.0)
    assert on.needs_calibration() and not QuantizeParams(**CALIB).needs_calibration()
    seen = []
    stats, _ = calibrate(tiny_checkpoint, str(data_dir), on, seen.append)
    assert len(seen) == calibration_steps(str(data_dir), on) == 4  # forward and backward passes
    assert "blocks.0.mlp.fc.weight" + ROW_FISHER in stats
    plain, _ = calibrate(tiny_checkpoint, str(data_dir), QuantizeParams(**{**CALIB, "method": "gptq"}))
    assert not any(k.endswith(ROW_FISHER) for k in plain)


def test_allocated_quantize_gives_sensitive_rows_finer_steps(data_dir, tiny_checkpoint,
                                                            monkeypatch):
    monkeypatch.setattr(allocate, "MIN_SIGMAS", 0.0)  # the rule alone, unbounded
    monkeypatch.setattr(allocate, "CLAMP", 1e3)
    params = QuantizeParams(**CALIB, fisher_alpha=1.0)
    stats, provenance = calibrate(tiny_checkpoint, str(data_dir), params)
    q = quantize(tiny_checkpoint, params, parents={}, hessians=stats, calibration=provenance)
    plain = quantize(tiny_checkpoint, QuantizeParams(**CALIB), parents={})
    assert q.params["quantize"]["fisher_alpha"] == 1.0
    name = "blocks.0.mlp.fc.weight"
    f = stats[name + ROW_FISHER]
    ratio = q.tensors[name + ".scale"].float() / plain.tensors[name + ".scale"].float()
    # the step relative to the grid's falls as the row's Fisher rises (up to fp16 rounding)
    order = torch.argsort(f)
    assert ratio[order[0]] > ratio[order[-1]]
    assert torch.corrcoef(torch.stack([f.log(), ratio.log()]))[0, 1] < -0.9
    # alpha 0 is the grid's own steps: the Fisher in the statistics changes nothing
    off = quantize(tiny_checkpoint, QuantizeParams(**CALIB), parents={}, hessians=stats)
    assert all(torch.equal(off.tensors[k], plain.tensors[k]) for k in plain.tensors)


def test_allocation_without_the_fisher_is_refused(tiny_checkpoint):
    with pytest.raises(QuantizeError, match="needs calibration data"):
        quantize(tiny_checkpoint, QuantizeParams(**CALIB, fisher_alpha=1.0), parents={})
    with pytest.raises(QuantizeError, match="fisher_alpha needs the row Fisher of "):
        quantize(tiny_checkpoint, QuantizeParams(**CALIB, fisher_alpha=1.0), parents={},
                 hessians={})
    broken = {n + ROW_FISHER: torch.full((t.shape[0] if t.ndim >= 2 else 1,), float("nan"))
              for n, t in tiny_checkpoint.tensors.items()}
    with pytest.raises(QuantizeError, match="row Fisher of .* is not finite"):
        quantize(tiny_checkpoint, QuantizeParams(**CALIB, fisher_alpha=1.0), parents={},
                 hessians=broken)
