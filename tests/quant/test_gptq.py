"""GPTQ against round-to-nearest: error feedback through the Hessian lowers the layer's output
error; dead inputs are zeroed; act-order is optional."""

import pytest
import torch

from stages.codec.entropy import order0_bits
from stages.quant.gptq import gptq
from stages.quant.rate import code_bits, round_with_rate
from stages.quant.registry import QuantizeError
from stages.quant.rtn import rtn


def _output_error(w, q, scale, x):
    return ((x @ w.T - x @ (q.float() * scale[:, None]).T) ** 2).mean().item()


def test_rtn_is_within_half_a_step_inside_the_clip():
    torch.manual_seed(0)
    w = torch.randn(8, 32)
    scale = w.abs().amax(dim=1) / 7
    q = rtn(w, scale, 7)
    assert q.dtype == torch.int8 and q.abs().max() <= 7
    assert ((q.float() * scale[:, None] - w).abs() <= scale[:, None] / 2 + 1e-6).all()


def _correlated_layer(rows: int, qmax: int):
    """Inputs x, weights w (rows, 64), their Hessian and per-row scales for codes up to qmax.
    The inputs are correlated (as real activations are): this is where error feedback pays off."""
    torch.manual_seed(0)
    x = torch.randn(2048, 64) @ torch.randn(64, 64) * 0.3 + torch.randn(2048, 1)
    w = torch.randn(rows, 64)
    scale = (w.abs().amax(dim=1) / qmax).half().float()
    return x, w, x.T @ x / x.size(0), scale


def test_gptq_beats_rtn_on_layer_output_error():
    x, w, h, scale = _correlated_layer(32, 7)  # int4
    q_rtn, q_gptq = rtn(w, scale, 7), gptq(w, scale, 7, hessian=h, block=16)
    assert q_gptq.dtype == torch.int8 and q_gptq.abs().max() <= 7
    assert _output_error(w, q_gptq, scale, x) < 0.7 * _output_error(w, q_rtn, scale, x)


def test_gptq_handles_dead_columns_and_no_act_order():
    torch.manual_seed(0)
    x = torch.randn(512, 16)
    x[:, 3] = 0.0  # an input that never fires
    w = torch.randn(8, 16)
    scale = (w.abs().amax(dim=1) / 31).half().float()
    for act_order in (True, False):
        q = gptq(w, scale, 31, hessian=x.T @ x / 512, act_order=act_order)
        assert (q[:, 3] == 0).all()


def test_gptq_needs_a_hessian():
    with pytest.raises(QuantizeError, match="needs calibration data"):
        gptq(torch.ones(2, 2), torch.ones(2), 7)


def test_rate_aware_rounding_picks_floor_or_ceil_and_pays_for_bits():
    x = torch.linspace(-9.9, 9.9, 397, dtype=torch.float64)[None, :]  # (1, 397) weights in steps
    bits = code_bits(torch.randn(64, 256, dtype=torch.float64) * 3, 31)
    for lam in (0.1, 1.0, 100.0):
        q = round_with_rate(x, 31, bits, lam)
        assert ((q == torch.floor(x)) | (q == torch.ceil(x))).all()
        cost = (x - q) ** 2 + lam * bits[(q + 31).long()]
        other = torch.where(q == torch.floor(x), torch.ceil(x), torch.floor(x))
        assert (cost <= (x - other) ** 2 + lam * bits[(other + 31).long()]).all()
    # With a weight that dwarfs the error, every choice is the likelier neighbour: toward zero here.
    q = round_with_rate(x, 31, bits, 100.0)
    assert (q.abs() <= x.abs().floor()).all()


def test_rate_aware_gptq_trades_output_error_for_fewer_bits():
    x, w, h, scale = _correlated_layer(48, 31)  # int6
    runs = [gptq(w, scale, 31, hessian=h, block=16, rate_lambda=lam) for lam in (0.0, 0.3, 1.0)]
    assert torch.equal(runs[0], gptq(w, scale, 31, hessian=h, block=16))  # 0 = plain GPTQ
    bits = [order0_bits(q.numpy().ravel()) for q in runs]
    errors = [_output_error(w, q, scale, x) for q in runs]
    assert bits[0] > bits[1] > bits[2]
    assert errors[0] < errors[1] < errors[2]
