"""Clip grids: how the clip value (and so the scale, clip / qmax) of each row is chosen.

Every grid has the signature `grid(w, params, *, qmax, group, hessian) -> clip (rows,)` where `w` is
the matrix as rows x columns, `group` its tensor group and `hessian` the calibration Hessian of its
input (columns x columns) or None. A grid that needs a Hessian says so.
"""

from __future__ import annotations

import torch

from stages.quant.params import QuantizeParams
from stages.quant.registry import GRIDS, QuantizeError

# torch.quantile refuses inputs above 2**24 elements; rows are processed in blocks below that.
_QUANTILE_MAX_NUMEL = 1 << 24


def _row_quantile(a: torch.Tensor, q: float) -> torch.Tensor:
    if q >= 1.0:
        return a.amax(dim=1)
    rows_per_block = max(1, _QUANTILE_MAX_NUMEL // max(a.size(1), 1))
    return torch.cat([torch.quantile(a[i:i + rows_per_block], q, dim=1)
                      for i in range(0, a.size(0), rows_per_block)])


def percentile_clip(w: torch.Tensor, params: QuantizeParams, **_context) -> torch.Tensor:
    """The baseline's rule: clip each row at the `clip_percentile` quantile of its |w|."""
    return _row_quantile(w.abs().float(), params.clip_percentile / 100.0)


def mse_clip(w: torch.Tensor, params: QuantizeParams, *, qmax: int, **_context) -> torch.Tensor:
    """One percentile per matrix: the candidate whose round-to-nearest error is smallest.

    One choice for the whole matrix, not per row: that is what the GPTQ-lite record actually did
    (its README says per row; its code picks per matrix).
    """
    a = w.abs().float()
    best, best_err = None, float("inf")
    for p in params.mse_percentiles:
        clip = _row_quantile(a, p / 100.0)
        scale = (clip / qmax).clamp_min(1e-12)[:, None]
        err = (torch.clamp(torch.round(w / scale), -qmax, qmax) * scale - w).square().sum().item()
        if err < best_err:
            best, best_err = clip, err
    return best


def sdclip(w: torch.Tensor, params: QuantizeParams, *, group: str, **_context) -> torch.Tensor:
    """SDClip: clip = k * std(row), with k per tensor group. Raising k lowers the entropy of the
    codes (and so the compressed size) smoothly, which makes k the knob for a byte budget."""
    return params.clip_sigmas_for(group) * w.float().std(dim=1, unbiased=False)


def sdclip_hessian(w: torch.Tensor, params: QuantizeParams, *, group: str,
                   hessian: torch.Tensor | None = None, **_context) -> torch.Tensor:
    """SDClip widened for rows whose large weights sit on important inputs (the HSDC record):
    imp_j = H_jj / mean(H_jj); r_i = mean_j |W_ij| imp_j (normalised to mean 1);
    clip_i = k sigma_i (1 + lambda (r_i - 1))."""
    if hessian is None:
        raise QuantizeError("quantize.grid 'sdclip-hessian' needs calibration data (--calib)")
    diag = torch.diagonal(hessian).float()
    importance = diag / diag.mean().clamp_min(1e-12)
    r = (w.abs().float() * importance[None, :]).mean(dim=1)
    r = r / r.mean().clamp_min(1e-12)
    return sdclip(w, params, group=group) * (1.0 + params.hessian_lambda * (r - 1.0)).clamp_min(0.1)


GRIDS["percentile"] = percentile_clip
GRIDS["mse"] = mse_clip
GRIDS["sdclip"] = sdclip
GRIDS["sdclip-hessian"] = sdclip_hessian
