"""`golf quantize`: a float checkpoint -> a quantized artifact, by method x grid from the registries.

Policy (the baseline's, spec §4.1, extended per tensor group): float tensors with more than
`keep_float_max_numel` elements are quantized row-wise (a tensor of more than two dimensions is viewed
as rows x rest, a 1-D one as a single row) with the bits of their group; smaller ones are kept in
float, fp32 for control tensors (scales, mixes, gains: tiny and sensitive), fp16 for the rest.
Scales are stored in fp16 and the codes are computed against the fp16-rounded scales, so what is
dequantized is exactly what was optimised.

Methods that need calibration (GPTQ) or grids that do (sdclip-hessian) receive each weight's input
Hessian from `stages.quant.calibrate`; the artifact records where the calibration tokens came from.
"""

from __future__ import annotations

import dataclasses

import torch

from stages.artifacts import Artifact, to_bytes
from stages.compress import pack
from stages.config import QuantizeParams, to_dict
from stages.device import resolve_device
from stages.model import CONTROL_NAMES
from stages.quant import QuantizeError, get_grid, get_method, lqer
from stages.quant.groups import tensor_group

FP16_MIN_NORMAL = 2.0**-14


def needs_calibration(params: QuantizeParams) -> bool:
    return params.method == "gptq" or params.grid == "sdclip-hessian"


def _keep_float(name: str, t: torch.Tensor) -> dict:
    if any(c in name for c in CONTROL_NAMES):
        return {"scheme": "float32", "dtype": str(t.dtype).removeprefix("torch.")}
    return {"scheme": "float16", "dtype": str(t.dtype).removeprefix("torch.")}


def _prune(w: torch.Tensor, frac: float) -> torch.Tensor:
    """Zero the `frac` smallest-magnitude entries (magnitude pruning before quantization, §4.8)."""
    k = int(frac * w.numel())
    if k == 0:
        return w
    threshold = w.abs().flatten().kthvalue(k).values
    return torch.where(w.abs() <= threshold, torch.zeros_like(w), w)


def quantize(checkpoint: Artifact, params: QuantizeParams, *, parents: dict[str, str],
             hessians: dict[str, torch.Tensor] | None = None,
             calibration: dict | None = None) -> Artifact:
    """Quantize the tensors of `checkpoint` and return a `quantized` artifact.

    Args:
        checkpoint: a float `checkpoint` artifact.
        params: the `quantize` section.
        parents: hashes of the inputs, recorded in the artifact.
        hessians: input Hessian per weight name, when the method or grid needs them.
        calibration: provenance of the calibration tokens behind `hessians`.
    """
    if checkpoint.kind != "checkpoint":
        raise QuantizeError(f"quantize takes a checkpoint, got a {checkpoint.kind} artifact")
    grid, method = get_grid(params.grid), get_method(params.method)
    if needs_calibration(params) and hessians is None:
        raise QuantizeError(f"quantize {params.method}/{params.grid} needs calibration data "
                            f"(--calib DATA_DIR or --calib self)")
    hessians = hessians or {}
    device = resolve_device(params.device)
    tensors: dict[str, torch.Tensor] = {}
    table: dict[str, dict] = {}
    for name in sorted(checkpoint.tensors):
        t = checkpoint.tensors[name]
        if not t.is_floating_point():
            tensors[name], table[name] = t, {"scheme": "raw"}
            continue
        if t.numel() <= params.keep_float_max_numel:
            entry = _keep_float(name, t)
            tensors[name] = t.float() if entry["scheme"] == "float32" else t.half()
            table[name] = entry
            continue
        group = tensor_group(name)
        bits = params.bits_for(group)
        qmax = (1 << (bits - 1)) - 1
        w = t.float().reshape(t.shape[0], -1) if t.ndim >= 2 else t.float().reshape(1, -1)
        w = _prune(w, params.prune_frac)
        h = hessians.get(name) if t.ndim == 2 else None
        clip = grid(w, params, qmax=qmax, group=group, hessian=h) * params.clip_multiplier
        # Floor at fp16's smallest normal number (an all-zero row would otherwise divide by zero),
        # then round to fp16 first: the codes are then optimal for the scales that are stored.
        scale = (clip.float() / qmax).clamp_min(FP16_MIN_NORMAL).half().float()
        on = device if h is not None else torch.device("cpu")  # only Hessian solvers need the GPU
        q = method(w.to(on), scale.to(on), qmax, hessian=None if h is None else h.to(on),
                   block=params.gptq_block, damp=params.gptq_damp,
                   act_order=params.gptq_act_order).cpu()
        tensors[f"{name}.q"] = q.contiguous()
        tensors[f"{name}.scale"] = scale.half()
        table[name] = {"scheme": "int_per_row", "bits": bits, "group": group,
                       "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
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
    errors = {}
    for name, entry in table.items():
        if entry["scheme"] == "int_per_row" and len(entry["shape"]) == 2:
            deq = tensors[f"{name}.q"].float() * tensors[f"{name}.scale"].float()[:, None]
            errors[name] = checkpoint.tensors[name].float() - deq
    worst = sorted(errors, key=lambda n: errors[n].norm().item(), reverse=True)[:params.lqer_top]
    for name in worst:
        for role, t in lqer.factors(errors[name], params.lqer_rank, params.lqer_group).items():
            tensors[f"{name}.{role}"] = t
        table[name]["lqer"] = {"rank": min(params.lqer_rank, min(errors[name].shape)),
                               "group": params.lqer_group}


def quantize_to_target(checkpoint: Artifact, params: QuantizeParams, *, target_bytes: int,
                       code_bytes: int, codec: str, level: int | None = None,
                       **kwargs) -> tuple[Artifact, dict]:
    """Quantize so that the compressed model + `code_bytes` is at most `target_bytes`.

    Wider clips mean fewer distinct codes and so fewer bytes (for SDClip the code entropy falls like
    -log2 k), at some cost in precision. Starting from the configured `clip_multiplier`, the search
    keeps it if the result already fits, else finds the smallest multiplier that fits by doubling
    then bisecting, so the least precision is given up.

    Returns:
        The quantized artifact (its params record the chosen multiplier) and a search report.
    """
    tries: list[dict] = []

    def attempt(multiplier: float) -> tuple[Artifact, int]:
        q = quantize(checkpoint, dataclasses.replace(params, clip_multiplier=multiplier), **kwargs)
        total = len(pack(to_bytes(q), codec, level)) + code_bytes
        tries.append({"clip_multiplier": round(multiplier, 6), "total_bytes": total})
        return q, total

    base = params.clip_multiplier
    best, total = attempt(base)
    if total <= target_bytes:
        return best, {"clip_multiplier": base, "total_bytes": total, "tries": tries}
    lo, hi = base, base
    while total > target_bytes:
        lo, hi = hi, hi * 2.0
        if hi > 64 * base:
            raise QuantizeError(f"cannot reach {target_bytes:,} bytes: even clip_multiplier "
                                f"{lo:g} gives {total:,}; lower the bits")
        best, total = attempt(hi)
    best_multiplier, best_total = hi, total
    for _ in range(8):  # bisect between a multiplier that does not fit (lo) and one that does (hi)
        mid = (lo * hi) ** 0.5
        q, total = attempt(mid)
        if total <= target_bytes:
            hi, best, best_multiplier, best_total = mid, q, mid, total
        else:
            lo = mid
    return best, {"clip_multiplier": best_multiplier, "total_bytes": best_total, "tries": tries}


def dequantize(artifact: Artifact) -> dict[str, torch.Tensor]:
    """Float tensors (fp32) with the canonical names, from a quantized artifact."""
    if artifact.kind != "quantized":
        raise QuantizeError(f"dequantize takes a quantized artifact, got {artifact.kind}")
    out = {}
    for name, entry in artifact.extra["tensors"].items():
        scheme = entry["scheme"]
        if scheme in ("float16", "float32", "raw"):
            out[name] = artifact.tensors[name].float() if scheme != "raw" else artifact.tensors[name]
        elif scheme == "int_per_row":
            q = artifact.tensors[f"{name}.q"].float()
            scale = artifact.tensors[f"{name}.scale"].float()
            w = q * scale[:, None]
            if "lqer" in entry:
                f = {r: artifact.tensors[f"{name}.{r}"]
                     for r in ("lqer_a", "lqer_a_scale", "lqer_b", "lqer_b_scale")}
                w = w + lqer.correction(f, entry["lqer"]["group"])
            out[name] = w.reshape(entry["shape"])
        else:
            raise QuantizeError(f"unknown quantization scheme {scheme!r} for tensor {name}")
    return out


def scheme_counts(artifact: Artifact) -> dict[str, int]:
    """How many tensors of a quantized artifact use each storage scheme."""
    counts: dict[str, int] = {}
    for entry in artifact.extra.get("tensors", {}).values():
        counts[entry["scheme"]] = counts.get(entry["scheme"], 0) + 1
    return counts
