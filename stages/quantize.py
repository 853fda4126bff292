"""`golf quantize`: a float checkpoint -> a quantized artifact, by method x grid from the registries.

Policy (the baseline's, spec §4.1): float tensors with more than `keep_float_max_numel` elements are
quantized row-wise (a tensor of more than two dimensions is viewed as rows x rest, a 1-D one as a
single row); smaller ones are kept in float, fp32 for control tensors (scales, mixes, gains: tiny and
sensitive), fp16 for the rest. Scales are stored in fp16, and the codes are computed against the
fp16-rounded scales, so what is dequantized is exactly what was optimised.
"""

from __future__ import annotations

import torch

from stages.artifacts import Artifact
from stages.config import QuantizeParams, to_dict
from stages.model import CONTROL_NAMES
from stages.quant import QuantizeError, get_grid, get_method

FP16_MIN_NORMAL = 2.0**-14


def _keep_float(name: str, t: torch.Tensor) -> dict:
    if any(c in name for c in CONTROL_NAMES):
        return {"scheme": "float32", "dtype": str(t.dtype).removeprefix("torch.")}
    return {"scheme": "float16", "dtype": str(t.dtype).removeprefix("torch.")}


def quantize(checkpoint: Artifact, params: QuantizeParams, *, parents: dict[str, str]) -> Artifact:
    """Quantize the tensors of `checkpoint` and return a `quantized` artifact."""
    if checkpoint.kind != "checkpoint":
        raise QuantizeError(f"quantize takes a checkpoint, got a {checkpoint.kind} artifact")
    grid, method = get_grid(params.grid), get_method(params.method)
    qmax = (1 << (params.bits - 1)) - 1
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
        w = t.float().reshape(t.shape[0], -1) if t.ndim >= 2 else t.float().reshape(1, -1)
        scale = grid(w, params).float() / qmax
        # Floor at fp16's smallest normal number (an all-zero row would otherwise divide by zero),
        # then round to fp16 first: the codes are then optimal for the scales that are stored.
        scale = scale.clamp_min(FP16_MIN_NORMAL).half().float()
        q = method(w, scale, qmax)
        tensors[f"{name}.q"] = q.contiguous()
        tensors[f"{name}.scale"] = scale.half()
        table[name] = {"scheme": "int_per_row", "bits": params.bits, "shape": list(t.shape),
                       "dtype": str(t.dtype).removeprefix("torch.")}
    return Artifact(
        "quantized", tensors, checkpoint.model_config,
        params={"quantize": to_dict(params)}, parents=parents,
        provenance={**checkpoint.provenance, "quantizer": f"{params.method}/{params.grid}"},
        extra={"tensors": table},
    )


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
            out[name] = (q * scale[:, None]).reshape(entry["shape"])
        else:
            raise QuantizeError(f"unknown quantization scheme {scheme!r} for tensor {name}")
    return out


def scheme_counts(artifact: Artifact) -> dict[str, int]:
    """How many tensors of a quantized artifact use each storage scheme."""
    counts: dict[str, int] = {}
    for entry in artifact.extra.get("tensors", {}).values():
        counts[entry["scheme"]] = counts.get(entry["scheme"], 0) + 1
    return counts
