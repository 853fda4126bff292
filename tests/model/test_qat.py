"""Late QAT: the fake quantiser is the quantize stage's grid, the switch is a tensor (so compiled
graphs follow it), it never enters a checkpoint, and gradients pass straight through."""

import dataclasses

import pytest
import torch

from stages.artifacts import Artifact
from stages.errors import GolfError
from stages.model.config import ModelConfig
from stages.model.gpt import GPT, roles_for
from stages.model.qat import fake_quantize, round_to_fp16
from stages.quant.format import dequantize
from stages.quant.params import QuantizeParams
from stages.quant.quantize import quantize
from stages.tensorfile import qmax_for
from tests.conftest import TINY_MODEL

CFG = ModelConfig(**TINY_MODEL)
# Late QAT fake-quantizes every block matrix.
QAT_MATRICES = tuple(n for n, r in roles_for(CFG).items()
                     if r.kind == "matrix" and n.startswith("blocks."))


def _trained_ish(cfg=CFG):
    """Non-zero output projections, as after some training, so every matrix reaches the output."""
    torch.manual_seed(0)
    model = GPT(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("proj.weight"):
                p.normal_(std=0.05)
    return model


def _stage_dequantized(w, **params):
    """What `golf quantize` (rtn) stores for `w`, dequantized."""
    ckpt = Artifact("checkpoint", {"blocks.0.attn.c_q.weight": w}, CFG)
    q = quantize(ckpt, QuantizeParams(method="rtn", keep_float_max_numel=0, **params), parents={})
    return dequantize(q)["blocks.0.attn.c_q.weight"]


@pytest.mark.parametrize("bits", [4, 6, 8])
def test_fake_quantizer_matches_the_quantize_stage(bits):
    torch.manual_seed(bits)
    w = torch.randn(48, 64) * 0.05
    w[3, 5] = 0.9  # an outlier row: abs-max and SDClip scales differ there
    qmax = qmax_for(bits)
    absmax = _stage_dequantized(w, bits=bits, grid="percentile", clip_percentile=100.0)
    assert torch.equal(fake_quantize(w, qmax, 0.0), absmax)
    sd = _stage_dequantized(w, bits=bits, grid="sdclip", clip_sigmas=3.0)
    assert torch.equal(fake_quantize(w, qmax, 3.0), sd)
    assert not torch.equal(absmax, sd)


def test_qat_switches_the_forward_and_restores_it_exactly():
    model = _trained_ish()
    idx = torch.randint(2, CFG.vocab_size, (2, 16))
    names = set(model.state_dict())
    before = model(idx)
    model.set_qat(4)
    quantised = model(idx)
    assert not torch.allclose(quantised, before, atol=1e-4)
    # The same as running the plain model on fake-quantized block matrices.
    reference = GPT(CFG)
    reference.load_state_dict({n: fake_quantize(t, 7) if n in QAT_MATRICES else t
                               for n, t in model.state_dict().items()})
    assert torch.allclose(quantised, reference(idx), atol=1e-5)
    model.set_qat(4, clip_sigmas=2.0)
    assert not torch.allclose(model(idx), quantised, atol=1e-4)
    model.set_qat(0)
    assert torch.equal(model(idx), before)
    assert set(model.state_dict()) == names  # the switch is never saved
    assert not names & {n for n, _ in model.named_buffers()}


def test_gradients_pass_straight_through():
    model = _trained_ish()
    idx = torch.randint(2, CFG.vocab_size, (2, 16))
    model.set_qat(4)
    model.loss(idx[:, :-1], idx[:, 1:]).backward()
    # The STE gradient of a matrix is the plain gradient taken at its fake-quantized value.
    reference = GPT(CFG)
    reference.load_state_dict({n: fake_quantize(t, 7) if n in QAT_MATRICES else t
                               for n, t in model.state_dict().items()})
    reference.loss(idx[:, :-1], idx[:, 1:]).backward()
    for name, p in model.named_parameters():
        if name in QAT_MATRICES:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
            assert torch.allclose(p.grad, reference.get_parameter(name).grad, atol=1e-6), name


@pytest.mark.slow
def test_scales_round_like_fp16_even_when_compiled():
    """Inductor drops a .half().float() round trip; the arithmetic rounding must not be dropped."""
    torch.manual_seed(0)
    x = torch.exp(torch.empty(4096).uniform_(-9.6, 11.0))  # fp16's normal range
    x = torch.cat([x, torch.tensor([2.0**-14, 1.0, 1.0 - 2**-24, 1 + 2**-11, 1 + 3 * 2**-11])])
    assert torch.equal(round_to_fp16(x), x.half().float())
    assert torch.equal(torch.compile(round_to_fp16)(x), x.half().float())


def test_qat_arguments_are_checked():
    model = GPT(CFG)
    with pytest.raises(GolfError, match="QAT bits"):
        model.set_qat(1)
    with pytest.raises(GolfError, match="clip_sigmas"):
        model.set_qat(6, clip_sigmas=-1.0)


@pytest.mark.slow
def test_compiled_model_follows_the_switch():
    """torch.compile must not fold the switch into a constant : toggling it after the
    first compiled call changes the compiled output, and switching off restores it."""
    model = _trained_ish(dataclasses.replace(CFG, num_layers=1))
    idx = torch.randint(2, CFG.vocab_size, (1, 8))
    eager_off = model(idx)
    model.set_qat(4)
    eager_on = model(idx)
    model.set_qat(0)
    compiled = torch.compile(model)
    assert torch.allclose(compiled(idx), eager_off, atol=1e-5)
    # The switch is graph data, not a guarded constant: toggling it must not even recompile.
    with torch._dynamo.config.patch(error_on_recompile=True):
        model.set_qat(4)
        assert torch.allclose(compiled(idx), eager_on, atol=1e-5)
        model.set_qat(0)
        assert torch.allclose(compiled(idx), eager_off, atol=1e-5)
