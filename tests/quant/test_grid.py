"""Clip grids: the percentile, MSE, SDClip and Hessian-widened SDClip rules."""

import pytest
import torch

from stages.quant.grid import mse_clip, percentile_clip, sdclip, sdclip_hessian
from stages.quant.params import QuantizeParams
from stages.quant.registry import QuantizeError


def test_percentile_clip_clips_outliers():
    w = torch.ones(2, 1000)
    w[0, 0] = 100.0
    clip = percentile_clip(w, QuantizeParams(clip_percentile=99.0))
    assert clip[0] < 2 and clip[1] == 1.0
    assert percentile_clip(w, QuantizeParams(clip_percentile=100.0))[0] == 100.0


def test_sdclip_is_k_standard_deviations_per_group():
    torch.manual_seed(0)
    w = torch.randn(16, 512)
    p = QuantizeParams(clip_sigmas=3.0, group_clip_sigmas={"attn_q": 5.0})
    assert torch.allclose(sdclip(w, p, group="mlp_up"), 3.0 * w.std(dim=1, unbiased=False))
    assert torch.allclose(sdclip(w, p, group="attn_q"), 5.0 * w.std(dim=1, unbiased=False))


def test_mse_grid_does_not_let_one_outlier_set_the_scale():
    torch.manual_seed(0)
    w = torch.randn(16, 512)
    w[0, 0] = 50.0
    clip = mse_clip(w, QuantizeParams(), qmax=7)
    assert clip[0] < 50.0


def test_sdclip_hessian_widens_rows_heavy_on_important_inputs():
    torch.manual_seed(0)
    p = QuantizeParams(clip_sigmas=3.0)
    h = torch.eye(512)
    h[:8, :8] *= 100.0  # important inputs: rows heavy there get wider clips
    w = torch.randn(4, 512)
    w[0, :8] *= 10
    widened = sdclip_hessian(w, p, group="other", hessian=h)
    plain = sdclip(w, p, group="other")
    assert widened[0] / plain[0] > widened[1] / plain[1]
    with pytest.raises(QuantizeError, match="needs calibration"):
        sdclip_hessian(w, p, group="other", hessian=None)
