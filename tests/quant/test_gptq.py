"""GPTQ against round-to-nearest: error feedback through the Hessian lowers the layer's output
error; dead inputs are zeroed; act-order is optional."""

import pytest
import torch

from stages.quant.gptq import gptq
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


def test_gptq_beats_rtn_on_layer_output_error():
    torch.manual_seed(0)
    # Correlated inputs (as real activations are): this is where error feedback pays off.
    x = torch.randn(2048, 64) @ torch.randn(64, 64) * 0.3 + torch.randn(2048, 1)
    w = torch.randn(32, 64)
    h = x.T @ x / x.size(0)
    scale = (w.abs().amax(dim=1) / 7).half().float()  # int4
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
