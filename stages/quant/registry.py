"""Quantizer registries: a grid (how each row is clipped) and a method (how it is rounded).

Two independent choices, each a plain dict filled in next to its implementations:

- a **grid** decides the clip value of each row: `GRIDS[name](w, params, *, qmax, group, hessian)
  -> clip (rows,)` (grid.py);
- a **method** decides the rounding given the scales: `METHODS[name](w, scale, qmax, **context)
  -> q` (int8 codes; the context carries the calibration Hessian for solvers that need it: rtn.py,
  gptq.py).

`quantize.method` and `quantize.grid` pick one of each, so a new solver or clip rule is one function
plus one registry line, and no caller changes (quantize.py imports the implementations, which fills
the dicts: GPTQ's only when a run uses it, so that an RTN run's train_gpt.py does without its code;
QuantizeParams lists the names, and a test holds the two lists equal).
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
        raise QuantizeError(f"quantize.grid {name!r} is not available "
                            f"(known: {', '.join(sorted(GRIDS))})")
    return GRIDS[name]


def get_method(name: str) -> MethodFn:
    if name not in METHODS:
        raise QuantizeError(f"quantize.method {name!r} is not available "
                            f"(known: {', '.join(sorted(METHODS))})")
    return METHODS[name]
