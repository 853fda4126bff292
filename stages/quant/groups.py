"""Tensor groups by role: what mixed precision, per-group clip multipliers and the codec's
per-group statistics are keyed by. Canonical tensor names map onto `TENSOR_GROUPS`."""

from __future__ import annotations

from stages.config import TENSOR_GROUPS

_PATTERNS = (
    ("tok_emb.", "embedding"),
    ("attn.c_q.", "attn_q"),
    ("attn.c_k.", "attn_k"),
    ("attn.c_v.", "attn_v"),
    ("attn.proj.", "attn_out"),
    ("mlp.fc.", "mlp_up"),
    ("mlp.proj.", "mlp_down"),
)


def tensor_group(name: str) -> str:
    """The group of a canonical tensor name (a `.q`/`.scale` suffix is ignored)."""
    for pattern, group in _PATTERNS:
        if pattern in name:
            return group
    return "other"


assert {g for _, g in _PATTERNS} | {"other"} == set(TENSOR_GROUPS)
