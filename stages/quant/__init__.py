"""Quantizer registries and the quantized artifact layout.

Two independent choices, each a plain dict filled in next to its implementations:

- a **grid** decides the clip value of each row: `GRIDS[name](w, params) -> clip (rows,)`;
- a **method** decides the rounding given the scales: `METHODS[name](w, scale, qmax, **context) -> q`
  (int8 codes; context will carry calibration statistics for solvers that need them).

`quantize.method` and `quantize.grid` pick one of each, so a new solver or clip rule is one function
plus one registry line, and no caller changes.

A quantized artifact stores, for each source tensor `name`, either
  `name.q` (int8 codes, one per byte: the codec removes the unused high bits) and `name.scale`
  (fp16, one per row), or `name` itself kept in float (fp16, or fp32 for control tensors),
and a per-tensor scheme table in its metadata (`extra.tensors`), so it can be dequantized with nothing
but the file.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from stages.errors import GolfError

GridFn = Callable[..., torch.Tensor]
MethodFn = Callable[..., torch.Tensor]

GRIDS: dict[str, GridFn] = {}
METHODS: dict[str, MethodFn] = {}


class QuantizeError(GolfError):
    """An unknown method or grid, or an artifact that cannot be quantized or dequantized."""


def get_grid(name: str) -> GridFn:
    if name not in GRIDS:
        raise QuantizeError(f"quantize.grid {name!r} is not available (known: {', '.join(sorted(GRIDS))})")
    return GRIDS[name]


def get_method(name: str) -> MethodFn:
    if name not in METHODS:
        raise QuantizeError(f"quantize.method {name!r} is not available "
                            f"(known: {', '.join(sorted(METHODS))})")
    return METHODS[name]


# Importing the implementations fills the registries.
from stages.quant import gptq as _gptq  # noqa: E402,F401
from stages.quant import grid as _grid  # noqa: E402,F401
from stages.quant import lqer  # noqa: E402,F401
from stages.quant import rtn as _rtn  # noqa: E402,F401
