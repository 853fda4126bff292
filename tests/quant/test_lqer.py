"""LQER: low-rank factors of the worst matrices' quantization error, stored in int2 / int4."""

import dataclasses

import torch

from stages.quant import lqer
from stages.quant.format import dequantize
from stages.quant.params import QuantizeParams
from stages.quant.quantize import quantize


def test_factors_approximate_a_low_rank_error():
    torch.manual_seed(0)
    error = torch.randn(32, 4) @ torch.randn(4, 48)  # exactly rank 4
    f = lqer.factors(error, rank=4, group=16)
    assert f["lqer_a"].shape == (32, 4) and f["lqer_b"].shape == (4, 48)
    assert f["lqer_a"].min() >= -2 and f["lqer_a"].max() <= 1
    assert f["lqer_b"].min() >= -8 and f["lqer_b"].max() <= 7
    # Coarse factors (int2 A, one scale per matrix), but the correction still removes error.
    assert (lqer.correction(f, 16) - error).norm() < 0.8 * error.norm()


def test_lqer_repairs_the_worst_matrices(tiny_checkpoint):
    ckpt = tiny_checkpoint
    params = QuantizeParams(bits=4, keep_float_max_numel=1024)
    plain = dequantize(quantize(ckpt, params, parents={}))
    q = quantize(ckpt, dataclasses.replace(params, lqer_rank=4, lqer_top=2), parents={})
    repaired = dequantize(q)
    fixed = [n for n, e in q.extra["tensors"].items() if "lqer" in e]
    assert len(fixed) == 2
    for name in fixed:
        assert q.tensors[f"{name}.lqer_a"].min() >= -2 and q.tensors[f"{name}.lqer_a"].max() <= 1
        assert q.tensors[f"{name}.lqer_b"].abs().max() <= 8
        before = (plain[name] - ckpt.tensors[name]).norm()
        after = (repaired[name] - ckpt.tensors[name]).norm()
        assert after < before, name
    untouched = next(n for n, e in q.extra["tensors"].items()
                     if e["scheme"] == "int_per_row" and "lqer" not in e)
    assert torch.equal(plain[untouched], repaired[untouched])
