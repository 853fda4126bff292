"""Late QAT: straight-through fake quantisation of weight matrices.

The forward pass sees each matrix as the quantize stage would store it, per-row symmetric:

    qmax = 2^(bits-1) - 1
    clip = max |w_row|                 (clip_sigmas == 0: the `percentile` grid at 100 %)
         = clip_sigmas * std(w_row)    (clip_sigmas > 0: the `sdclip` grid)
    scale = clip / qmax, floored at fp16's smallest normal and rounded to fp16 (as it is stored)
    w_fq = clamp(round(w / scale), -qmax, qmax) * scale

and the backward pass sees the identity (straight-through): w + (w_fq - w).detach().

The on/off switch is a tensor (`QATState.on`), used arithmetically: a compiled graph reads tensors
at run time, whereas torch.compile may fold a Python attribute into a constant, which silently kept
one record's late QAT from ever running. Compiled code always takes the tensor path. Eager code,
which reads Python state on every call anyway, skips the fake quantiser while QAT is off (a mirror
flag), so the default run costs nothing extra and computes exactly what a plain `nn.Linear` does.

The rounding is the quantize stage's per-row rule written out on tensors; tests/model/test_qat.py
checks that the result equals what `golf quantize` (rtn with the percentile-100 or sdclip grid)
dequantizes to. The model does not import the quantizer package, so an edit to GPTQ does not rerun
training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stages.errors import GolfError
from stages.tensorfile import FP16_MIN_NORMAL, qmax_for


class QATError(GolfError):
    """QAT settings out of range."""


def round_to_fp16(x: torch.Tensor) -> torch.Tensor:
    """`x` (positive, in fp16's normal range) rounded to the nearest fp16 value, kept fp32.

    Written as arithmetic because Inductor drops a `.half().float()` round trip as a no-op, so a
    compiled graph would use unrounded scales: 11 significant bits, round half to even, as the
    cast does.
    """
    _, exponent = torch.frexp(x)  # x = m * 2^exponent, m in [0.5, 1)
    step = torch.ldexp(torch.ones_like(x), exponent - 11)
    return torch.round(x / step) * step


def row_scales(w: torch.Tensor, qmax: torch.Tensor | float,
               clip_sigmas: torch.Tensor | float) -> torch.Tensor:
    """Per-row scales (rows, 1): row abs max, or `clip_sigmas` row std when that is > 0."""
    w = w.detach().float()
    absmax = w.abs().amax(dim=1, keepdim=True)
    sd_clip = clip_sigmas * w.std(dim=1, keepdim=True, unbiased=False)
    clip = torch.where(torch.as_tensor(clip_sigmas, device=w.device) > 0, sd_clip, absmax)
    return round_to_fp16((clip / qmax).clamp_min(FP16_MIN_NORMAL))


def fake_quantize(w: torch.Tensor, qmax: torch.Tensor | float,
                  clip_sigmas: torch.Tensor | float = 0.0) -> torch.Tensor:
    """`w` (rows, cols) rounded to the per-row grid and dequantized, without a gradient."""
    scale = row_scales(w, qmax, clip_sigmas)
    codes = torch.clamp(torch.round(w.detach().float() / scale), -qmax, qmax)
    return (codes * scale).to(w.dtype)


def straight_through(w: torch.Tensor, on: torch.Tensor, qmax: torch.Tensor,
                     clip_sigmas: torch.Tensor) -> torch.Tensor:
    """`w` when `on` is 0, its fake-quantized value when `on` is 1; the gradient is the identity.

    With `on` = 0 the added term is exactly zero, so the forward value and gradient are those of
    the plain weight.
    """
    return w + on * (fake_quantize(w, qmax, clip_sigmas) - w).detach()


class QATState(nn.Module):
    """The switch and grid shared by every fake-quantized matrix: tensors, so compiled graphs see
    changes. Non-persistent buffers: they move with `.to()` but never enter a state_dict."""

    def __init__(self):
        super().__init__()
        self.register_buffer("on", torch.zeros(()), persistent=False)
        # A valid grid even while off (qmax = 0 would make 0 * inf = nan in the masked term).
        self.register_buffer("qmax", torch.tensor(float(qmax_for(8))), persistent=False)
        self.register_buffer("clip_sigmas", torch.zeros(()), persistent=False)
        self.eager_active = False  # mirror of `on`, read only outside torch.compile

    def applies(self) -> bool:
        """Whether to run the fake quantiser: always in a compiled graph (where `on` decides),
        in eager mode only while QAT is on."""
        return torch.compiler.is_compiling() or self.eager_active

    @torch.no_grad()
    def set(self, bits: int, clip_sigmas: float = 0.0) -> None:
        """Fake-quantize to `bits` (2..8) with the given clip rule; `bits` = 0 switches it off."""
        if bits != 0 and not 2 <= bits <= 8:
            raise QATError(f"QAT bits must be 0 (off) or in [2, 8], got {bits}")
        if clip_sigmas < 0:
            raise QATError(f"QAT clip_sigmas must be >= 0, got {clip_sigmas}")
        self.on.fill_(1.0 if bits else 0.0)
        self.qmax.fill_(float(qmax_for(bits or 8)))
        self.clip_sigmas.fill_(float(clip_sigmas))
        self.eager_active = bool(bits)


class QATLinear(nn.Linear):
    """An `nn.Linear` whose weight goes through `straight_through` (the plain weight while QAT is
    off). Same parameter names as `nn.Linear`, so checkpoints and GPTQ hooks are unchanged."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__(in_features, out_features, bias=bias)
        self.qat = QATState()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if self.qat.applies():
            w = straight_through(w, self.qat.on, self.qat.qmax, self.qat.clip_sigmas)
        return F.linear(x, w, self.bias)
