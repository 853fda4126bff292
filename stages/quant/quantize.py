"""`golf quantize`: a float checkpoint -> a quantized artifact, by method x grid from the registries.

Policy (the baseline's, extended per tensor group): float tensors with more than
`keep_float_max_numel` elements are quantized row-wise (a tensor of more than two dimensions is viewed
as rows x rest, a 1-D one as a single row) with the bits of their group; smaller ones are kept in
float, fp32 for control tensors (scales, mixes, gains: tiny and sensitive), fp16 for the rest. What a
tensor is (control or not, its group) is its role, declared by the model (stages/model/roles.py).
Scales are stored in fp16 and the codes are computed against the fp16-rounded scales, so what is
dequantized is exactly what was optimised. The layout of the result: format.py.

Methods that need calibration (GPTQ) or grids that do (sdclip-hessian) receive each weight's input
Hessian from calibrate.py; the artifact records where the calibration tokens came from. With
`fisher_alpha` > 0, each row's clip is then scaled by its loss sensitivity (allocate.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from stages.artifacts import Artifact
from stages.device import resolve_device
from stages.model.gpt import roles_for
from stages.model.roles import Role
from stages.params import to_dict
from stages.quant import grid, rtn  # noqa: F401  (importing fills the registries; gptq: quantize)
from stages.quant.params import QuantizeParams
from stages.quant.registry import QuantizeError, get_grid, get_method
from stages.tensorfile import FP16_MIN_NORMAL, QUANT_SUFFIX, SCALE_SUFFIX, qmax_for


def _keep_float(role: Role, t: torch.Tensor) -> dict:
    scheme = "float32" if role.kind == "control" else "float16"
    return {"scheme": scheme, "dtype": str(t.dtype).removeprefix("torch.")}


def grid_rows(t: torch.Tensor, group: str, params: QuantizeParams, clip_rule,
              h: torch.Tensor | None) -> tuple[torch.Tensor, int, torch.Tensor]:
    """The float rows (rows, rest) that quantization rounds, with the `prune_frac`
    smallest-magnitude entries zeroed (magnitude pruning first); the group's qmax; and each row's
    clip by the grid, times clip_multiplier."""
    w = t.float().reshape(t.shape[0], -1) if t.ndim >= 2 else t.float().reshape(1, -1)
    k = int(params.prune_frac * w.numel())
    if k:
        threshold = w.abs().flatten().kthvalue(k).values
        w = torch.where(w.abs() <= threshold, torch.zeros_like(w), w)
    qmax = qmax_for(params.bits_for(group))
    return w, qmax, clip_rule(w, params, qmax=qmax, group=group, hessian=h) * params.clip_multiplier


def _quantize_tensor(name: str, t: torch.Tensor, group: str, params: QuantizeParams, clip_rule,
                     method, h: torch.Tensor | None, device: torch.device,
                     table: dict, multiplier: torch.Tensor | float = 1.0) -> dict[str, torch.Tensor]:
    """`name.q` and `name.scale` of one float tensor; its storage entry goes to `table`.
    `multiplier`: the allocation's factor on each row's clip (allocate.py)."""
    w, qmax, clip = grid_rows(t, group, params, clip_rule, h)
    clip = clip * multiplier
    # Floor at fp16's smallest normal number (an all-zero row would otherwise divide by zero),
    # then round to fp16 first: the codes are then optimal for the scales that are stored.
    scale = (clip.float() / qmax).clamp_min(FP16_MIN_NORMAL).half().float()
    on = device if h is not None else torch.device("cpu")  # only Hessian solvers need the GPU
    q = method(w.to(on), scale.to(on), qmax, hessian=None if h is None else h.to(on),
               block=params.gptq_block, damp=params.gptq_damp,
               act_order=params.gptq_act_order, rate_lambda=params.gptq_rate_lambda).cpu()
    table[name] = {"scheme": "int_per_row", "bits": params.bits_for(group), "group": group,
                   "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
    return {name + QUANT_SUFFIX: q.contiguous(), name + SCALE_SUFFIX: scale.half()}


def quantize(checkpoint: Artifact, params: QuantizeParams, *, parents: dict[str, str],
             hessians: dict[str, torch.Tensor] | None = None,
             calibration: dict | None = None,
             on_progress: Callable[[int], None] | None = None) -> Artifact:
    """Quantize the tensors of `checkpoint` and return a `quantized` artifact.

    Args:
        checkpoint: a float `checkpoint` artifact.
        params: the `quantize` section.
        parents: hashes of the inputs, recorded in the artifact.
        hessians: input Hessian per weight name, when the method or grid needs them.
        calibration: provenance of the calibration tokens behind `hessians`.
        on_progress: called with 1 after each of the checkpoint's tensors.
    """
    if checkpoint.kind != "checkpoint":
        raise QuantizeError(f"quantize takes a checkpoint, got a {checkpoint.kind} artifact")
    if params.method == "gptq":  # imported by the runs that use it: an RTN train_gpt.py lacks it
        from stages.quant import gptq  # noqa: F401  (importing registers the method)
    clip_rule, method = get_grid(params.grid), get_method(params.method)
    roles = roles_for(checkpoint.model_config)
    unknown = sorted(set(checkpoint.tensors) - roles.keys())
    if unknown:
        raise QuantizeError(f"tensors {unknown[:3]} are not parameters of the checkpoint's model")
    if params.needs_calibration() and hessians is None:
        raise QuantizeError(f"quantize {params.method}/{params.grid} needs calibration data "
                            f"(--calib DATA_DIR or --calib self)")
    hessians = hessians or {}
    device = resolve_device(params.device)
    tensors: dict[str, torch.Tensor] = {}
    table: dict[str, dict] = {}
    multipliers = {}
    if params.fisher_alpha > 0:  # only runs that allocate steps (a bundle may lack allocate.py)
        from stages.quant.allocate import allocate
        multipliers = allocate(checkpoint.tensors, roles, hessians, params, clip_rule)
    for name in sorted(checkpoint.tensors):
        t = checkpoint.tensors[name]
        if not t.is_floating_point():
            tensors[name], table[name] = t, {"scheme": "raw"}
        elif t.numel() <= params.keep_float_max_numel:
            entry = _keep_float(roles[name], t)
            tensors[name] = t.float() if entry["scheme"] == "float32" else t.half()
            table[name] = entry
        else:
            tensors.update(_quantize_tensor(name, t, roles[name].group, params, clip_rule,
                                            method, hessians.get(name) if t.ndim == 2 else None,
                                            device, table, multipliers.get(name, 1.0)))
        if on_progress:
            on_progress(1)
    if params.lqer_rank > 0:
        _add_lqer(checkpoint, tensors, table, params)
    provenance = {**checkpoint.provenance, "quantizer": f"{params.method}/{params.grid}"}
    if calibration is not None:
        provenance["calibration"] = calibration
    return Artifact("quantized", tensors, checkpoint.model_config,
                    params={"quantize": to_dict(params)}, parents=parents, provenance=provenance,
                    extra={"tensors": table})


def _add_lqer(checkpoint: Artifact, tensors: dict, table: dict, params: QuantizeParams) -> None:
    """Store low-rank error factors for the `lqer_top` 2-D matrices with the largest error."""
    from stages.quant import lqer  # only runs with LQER (a train_gpt.py without it lacks it)

    errors = {}
    for name, entry in table.items():
        if entry["scheme"] == "int_per_row" and len(entry["shape"]) == 2:
            deq = tensors[name + QUANT_SUFFIX].float() * tensors[name + SCALE_SUFFIX].float()[:, None]
            errors[name] = checkpoint.tensors[name].float() - deq
    worst = sorted(errors, key=lambda n: errors[n].norm().item(), reverse=True)[:params.lqer_top]
    for name in worst:
        for role, t in lqer.factors(errors[name], params.lqer_rank, params.lqer_group).items():
            tensors[f"{name}.{role}"] = t
        table[name]["lqer"] = {"rank": min(params.lqer_rank, min(errors[name].shape)),
                               "group": params.lqer_group}


def quantize_to_target(checkpoint: Artifact, params: QuantizeParams, *, target_bytes: int,
                       measure: Callable[[Artifact], int], **kwargs) -> tuple[Artifact, dict]:
    """Quantize so that `measure(result)` (compressed model + counted code bytes) is at most
    `target_bytes`, giving up as little precision as possible (stages.budget.search_clip_multiplier).

    Returns:
        The quantized artifact (its params record the chosen multiplier) and a search report.
    """
    from stages.budget import search_clip_multiplier  # only for --target-bytes

    def attempt(multiplier: float) -> tuple[Artifact, int]:
        q = quantize(checkpoint, dataclasses.replace(params, clip_multiplier=multiplier), **kwargs)
        return q, measure(q)

    return search_clip_multiplier(attempt, params.clip_multiplier, target_bytes)
