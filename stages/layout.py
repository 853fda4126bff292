"""Where the quantized codes lie in a safetensors payload; cutting them out and putting them back.

A safetensors file is an 8-byte little-endian header length, a JSON header that gives each tensor's
dtype and `data_offsets` (relative to the end of the header), then the tensor bytes. The codes of a
quantized artifact are its int8 tensors named `*.q` (see `stages/quant/__init__.py`): one symbol per
byte, most of the payload, and what an entropy coder should see. Everything else (the header, the
scales, the tensors kept in float) is "the rest", left to a general-purpose codec.

Only the header is parsed, never the tensors, so the payload is rebuilt byte for byte.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from stages.quant.groups import GROUPS, tensor_group

_LEN_BYTES = 8


@dataclass(frozen=True)
class Span:
    """One tensor's bytes: `payload[start:end]`, absolute offsets."""

    name: str
    dtype: str
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


def tensor_spans(data: bytes, total_len: int) -> list[Span]:
    """The tensors listed in the header at the start of `data`, ordered by offset.

    `data` needs to hold only the header (the decoder has nothing else yet); `total_len` is the
    length of the whole payload, which every span must fit in.

    Raises:
        ValueError: `data` does not start with a readable safetensors header.
    """
    if len(data) < _LEN_BYTES:
        raise ValueError("too short for a safetensors header")
    n = int.from_bytes(data[:_LEN_BYTES], "little")
    if n > len(data) - _LEN_BYTES:
        raise ValueError("safetensors header length runs past the data")
    try:
        header = json.loads(data[_LEN_BYTES:_LEN_BYTES + n])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError("safetensors header is not JSON") from None
    if not isinstance(header, dict):
        raise ValueError("safetensors header is not a JSON object")
    base = _LEN_BYTES + n
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = (int(x) for x in info["data_offsets"])
            dtype = str(info["dtype"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"safetensors entry {name!r} has no valid dtype/offsets") from None
        if not 0 <= begin <= end or base + end > total_len:
            raise ValueError(f"safetensors entry {name!r} lies outside the payload")
        spans.append(Span(name, dtype, base + begin, base + end))
    return sorted(spans, key=lambda s: (s.start, s.end, s.name))


def is_code(span: Span) -> bool:
    """A quantized code tensor: int8, one symbol per byte, named `*.q`."""
    return span.dtype == "I8" and span.name.endswith(".q") and span.size > 0


def code_spans(payload: bytes) -> list[Span]:
    """The code tensors of `payload`, by offset; empty when it is not safetensors or has none."""
    try:
        spans = [s for s in tensor_spans(payload, len(payload)) if is_code(s)]
        check_disjoint(spans)
    except ValueError:  # not a payload we can cut: the caller codes it whole
        return []
    return spans


def check_disjoint(spans: list[Span]) -> None:
    """Raise ValueError unless `spans` (ordered by offset) do not overlap: cutting needs that."""
    for a, b in zip(spans, spans[1:]):
        if b.start < a.end:
            raise ValueError(f"tensors {a.name!r} and {b.name!r} overlap")


def cut(payload: bytes, spans: list[Span]) -> bytes:
    """`payload` without the bytes of `spans` (disjoint, ordered by offset): the rest."""
    parts, pos = [], 0
    for s in spans:
        parts.append(payload[pos:s.start])
        pos = s.end
    parts.append(payload[pos:])
    return b"".join(parts)


def splice(rest: bytes, spans: list[Span], pieces: list[bytes]) -> bytes:
    """Inverse of `cut`: put `pieces[i]` back at `spans[i]`."""
    parts, pos, taken = [], 0, 0  # pos: in the payload being rebuilt; taken: bytes of rest used
    for s, piece in zip(spans, pieces, strict=True):
        gap = s.start - pos
        parts += [rest[taken:taken + gap], piece]
        taken += gap
        pos = s.end
    parts.append(rest[taken:])
    return b"".join(parts)


def group_spans(spans: list[Span]) -> dict[str, list[Span]]:
    """Code spans by tensor group, in the canonical group order; groups without codes left out."""
    by_group: dict[str, list[Span]] = {}
    for s in spans:
        by_group.setdefault(tensor_group(s.name), []).append(s)
    return {g: by_group[g] for g in GROUPS if g in by_group}


def symbols(payload: bytes, spans: list[Span]) -> np.ndarray:
    """The int8 codes of `spans`, concatenated in order."""
    if not spans:
        return np.zeros(0, dtype=np.int8)
    return np.concatenate([np.frombuffer(payload, np.int8, s.size, s.start) for s in spans])


def group_symbols(payload: bytes) -> dict[str, np.ndarray]:
    """Each tensor group's codes (int8), in canonical group order; empty for a float checkpoint."""
    return {g: symbols(payload, spans) for g, spans in group_spans(code_spans(payload)).items()}
