"""Round-to-nearest: the baseline's solver."""

from __future__ import annotations

import torch

from stages.quant.registry import METHODS


def rtn(w: torch.Tensor, scale: torch.Tensor, qmax: int, **_context) -> torch.Tensor:
    """Codes in [-qmax, qmax] for rows of `w` (rows, cols) with one scale per row.

    Every entry within its row's clip range (qmax * scale) is off by at most half a step after
    dequantization; entries beyond are clipped to the range.
    """
    q = torch.clamp(torch.round(w.float() / scale[:, None]), -qmax, qmax)
    return q.to(torch.int8)


METHODS["rtn"] = rtn
