"""Clip grids: how the clip value (and so the scale) of each row is chosen."""

from __future__ import annotations

import torch

from stages.config import QuantizeParams
from stages.quant import GRIDS

# torch.quantile refuses inputs above 2**24 elements; rows are processed in blocks below that.
_QUANTILE_MAX_NUMEL = 1 << 24


def percentile_clip(w: torch.Tensor, params: QuantizeParams) -> torch.Tensor:
    """The baseline's rule: clip each row at the `clip_percentile` quantile of its |w| (spec §4.1)."""
    a = w.abs().float()
    q = params.clip_percentile / 100.0
    if q >= 1.0:
        return a.amax(dim=1)
    rows_per_block = max(1, _QUANTILE_MAX_NUMEL // max(a.size(1), 1))
    return torch.cat([torch.quantile(a[i:i + rows_per_block], q, dim=1)
                      for i in range(0, a.size(0), rows_per_block)])


GRIDS["percentile"] = percentile_clip
