"""Where the quantized codes lie in a payload; cutting them out and putting them back.

The codes of a quantized artifact are its int8 `*.q` tensors (stages/quant/format.py): one symbol
per byte, most of the payload, and what an entropy coder should see. Everything else (the header,
the scales, the tensors kept in float) is "the rest", left to a general-purpose codec. The spans come
from stages/tensorfile.py, which also says each code tensor's bit width and tensor group, so nothing
here parses a header or knows how an artifact is quantized.
"""

from __future__ import annotations

import numpy as np

from stages.model.roles import QUANT_GROUPS
from stages.tensorfile import HeaderError, TensorSpan, read_header


def code_spans(payload: bytes) -> list[TensorSpan]:
    """The code tensors of `payload`, by offset; empty when it is not safetensors or has none."""
    try:
        spans = [s for s in read_header(payload).spans if s.is_code]
        check_disjoint(spans)
    except (HeaderError, ValueError):  # not a payload we can cut: the caller codes it whole
        return []
    return spans


def check_disjoint(spans: list[TensorSpan]) -> None:
    """Raise ValueError unless `spans` (ordered by offset) do not overlap: cutting needs that."""
    for a, b in zip(spans, spans[1:]):
        if b.start < a.end:
            raise ValueError(f"tensors {a.name!r} and {b.name!r} overlap")


def cut(payload: bytes, spans: list[TensorSpan]) -> bytes:
    """`payload` without the bytes of `spans` (disjoint, ordered by offset): the rest."""
    parts, pos = [], 0
    for s in spans:
        parts.append(payload[pos:s.start])
        pos = s.end
    parts.append(payload[pos:])
    return b"".join(parts)


def splice(rest: bytes, spans: list[TensorSpan], pieces: list[bytes]) -> bytes:
    """Inverse of `cut`: put `pieces[i]` back at `spans[i]`."""
    parts, pos, taken = [], 0, 0  # pos: in the payload being rebuilt; taken: bytes of rest used
    for s, piece in zip(spans, pieces, strict=True):
        gap = s.start - pos
        parts += [rest[taken:taken + gap], piece]
        taken += gap
        pos = s.end
    parts.append(rest[taken:])
    return b"".join(parts)


def group_rank(span: TensorSpan) -> int:
    """Position of the span's tensor group in the canonical order (unknown groups last)."""
    return QUANT_GROUPS.index(span.group) if span.group in QUANT_GROUPS else len(QUANT_GROUPS)


def group_spans(spans: list[TensorSpan]) -> dict[str, list[TensorSpan]]:
    """Code spans by tensor group, in the canonical group order; groups without codes left out."""
    by_group: dict[str, list[TensorSpan]] = {}
    for s in sorted(spans, key=lambda s: (group_rank(s), s.start)):
        by_group.setdefault(s.group, []).append(s)
    return by_group


def symbols(payload: bytes, spans: list[TensorSpan]) -> np.ndarray:
    """The int8 codes of `spans`, concatenated in order."""
    if not spans:
        return np.zeros(0, dtype=np.int8)
    return np.concatenate([np.frombuffer(payload, np.int8, s.size, s.start) for s in spans])


def matrix(payload: bytes, span: TensorSpan) -> np.ndarray:
    """A code tensor's int8 codes as (rows, cols): its first dimension by the rest."""
    return np.frombuffer(payload, np.int8, span.size, span.start).reshape(span.matrix_shape)


def group_symbols(payload: bytes) -> dict[str, np.ndarray]:
    """Each tensor group's codes (int8), in canonical group order; empty for a float checkpoint."""
    return {g: symbols(payload, spans) for g, spans in group_spans(code_spans(payload)).items()}
