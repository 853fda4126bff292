"""Tensor groups: which role a weight matrix plays, by its canonical name.

Weights of one role share a distribution (all query projections look alike, and differ from the
embedding), so the `ans` codec gives each group its own symbol histogram, the size report breaks the
bytes down by group, and a mixed-precision quantizer can pick bits per group.
"""

from __future__ import annotations

from stages.config import TENSOR_GROUPS

# Canonical order: how reports list the groups. Defined with the params that are keyed by it
# (quantize.group_bits, quantize.group_clip_sigmas).
GROUPS = TENSOR_GROUPS

# (parent module, leaf module) as they appear in a name: `blocks.3.attn.c_q.weight`.
_PAIRS = {
    ("attn", "c_q"): "attn_q",
    ("attn", "c_k"): "attn_k",
    ("attn", "c_v"): "attn_v",
    ("attn", "proj"): "attn_out",
    ("mlp", "fc"): "mlp_up",
    ("mlp", "proj"): "mlp_down",
}

# What a quantized artifact appends to a source tensor's name.
_STORAGE_SUFFIXES = (".q", ".scale")


def tensor_group(name: str) -> str:
    """The group of a tensor, from its checkpoint name or its quantized storage name.

    Args:
        name: e.g. `tok_emb.weight`, `blocks.0.attn.c_q.weight` or `blocks.0.attn.c_q.weight.q`.

    Returns:
        One of `GROUPS`; `other` for anything that is not a known weight matrix.
    """
    for suffix in _STORAGE_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    parts = name.split(".")
    if "tok_emb" in parts:
        return "embedding"
    for pair in zip(parts, parts[1:]):
        if pair in _PAIRS:
            return _PAIRS[pair]
    return "other"
