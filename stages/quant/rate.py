"""Rate-aware rounding: codes that cost fewer bits for a little more error.

Each weight x (in steps of its row's scale) takes the code of {floor x, ceil x} that minimises
(x - q)^2 + lambda * bits(q), where bits(q) = -log2 p(q) and p is the histogram of the tensor's
codes rounded to nearest (add-one smoothed): the order-0 model a coder would fit, so the choice
makes likely codes likelier. GPTQ (gptq.py) uses it per column when `quantize.gptq_rate_lambda`
> 0; at equal val_bpb it has not beaten a wider clip so far (docs/results.md).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def code_bits(x: torch.Tensor, qmax: int) -> torch.Tensor:
    """-log2 p(q) for q in [-qmax, qmax] (index q + qmax), p the add-one-smoothed histogram of
    `x` (weights in steps) rounded to nearest: the order-0 model a coder would fit."""
    q = torch.clamp(torch.round(x), -qmax, qmax).long() + qmax
    counts = torch.bincount(q.flatten(), minlength=2 * qmax + 1).double() + 1.0
    return -torch.log2(counts / counts.sum())


def round_with_rate(x: torch.Tensor, qmax: int, bits: torch.Tensor,
                    rate_lambda: float) -> torch.Tensor:
    """Codes for `x` (in steps): of floor and ceil, the one with the lower squared error plus
    `rate_lambda` times its `bits` (lambda 0: to nearest, ties to floor)."""
    lo = torch.clamp(torch.floor(x), -qmax, qmax)
    hi = torch.clamp(torch.ceil(x), -qmax, qmax)
    cost_lo = (x - lo) ** 2 + rate_lambda * bits[(lo + qmax).long()]
    cost_hi = (x - hi) ** 2 + rate_lambda * bits[(hi + qmax).long()]
    return torch.where(cost_hi < cost_lo, hi, lo)


def rate_rounding(x: torch.Tensor, qmax: int,
                  rate_lambda: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """The rounding GPTQ applies column by column: bits from the whole tensor `x` (in steps)."""
    bits = code_bits(x, qmax)
    return lambda col: round_with_rate(col, qmax, bits, rate_lambda)
