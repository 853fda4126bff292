"""The quantized artifact's layout, and reading it back to float weights (`dequantize`).

A quantized artifact stores, for each source tensor `name`, either
  `name.q` (int8 codes in [-qmax, qmax], one per byte: the codec removes the unused high bits) and
  `name.scale` (fp16, one per row; the tensor seen as rows x rest), plus optional LQER factors
  `name.lqer_a`, `name.lqer_a_scale`, `name.lqer_b`, `name.lqer_b_scale`; or
  `name` itself kept in float (fp16, or fp32 for control tensors), or raw (non-float tensors);
and a storage table in its metadata (`extra.tensors[name]`: scheme, bits, group, shape, dtype), so
it can be dequantized with nothing but the file.

This module imports no solver: evaluating a quantized model never depends on how it was quantized.
"""

from __future__ import annotations

import torch

from stages.artifacts import Artifact
from stages.quant.registry import QuantizeError
from stages.tensorfile import LQER_FACTORS, QUANT_SUFFIX, SCALE_SUFFIX


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
            q = artifact.tensors[name + QUANT_SUFFIX].float()
            scale = artifact.tensors[name + SCALE_SUFFIX].float()
            w = q * scale[:, None]  # (rows, rest)
            if "lqer" in entry:  # imported here: a train_gpt.py without LQER lacks the module
                from stages.quant import lqer

                f = {role: artifact.tensors[f"{name}.{role}"] for role in LQER_FACTORS}
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
