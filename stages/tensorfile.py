"""The one reader of safetensors headers: where each tensor's bytes lie, and what golf says of it.

A safetensors file is an 8-byte little-endian header length, a JSON header that gives each tensor's
dtype, shape and `data_offsets` (relative to the end of the header), then the tensor bytes. The
header's `__metadata__` holds string values only; golf keeps its whole document in one of them
(`META_KEY`, see stages/artifacts.py), and a quantized artifact lists each source tensor's storage
there (`extra.tensors[name]`: scheme, bits, group).

`read_header` parses only the header, never the tensors, so byte-level code (the codecs and layouts
in stages/codec/) can cut a payload apart and rebuild it byte for byte from typed `TensorSpan`s
without knowing anything else about artifacts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

META_KEY = "golf"  # the one metadata key of a golf artifact
QUANT_SUFFIX = ".q"  # a quantized tensor `name` is stored as `name.q` (codes) and `name.scale`
SCALE_SUFFIX = ".scale"
# Optional low-rank repair of a quantized matrix `name`: `name.lqer_a`, `name.lqer_a_scale`, ...
LQER_FACTORS = ("lqer_a", "lqer_a_scale", "lqer_b", "lqer_b_scale")
FP16_MIN_NORMAL = 2.0**-14  # the floor of a row's scale (an all-zero row would divide by zero)
_LEN_BYTES = 8


def qmax_for(bits: int) -> int:
    """Largest code magnitude of a signed `bits`-bit symmetric grid (31 for int6): codes of a
    `bits`-bit tensor lie in [-qmax, qmax], one per int8 byte."""
    return (1 << (bits - 1)) - 1


class HeaderError(ValueError):
    """Bytes that do not start with a readable safetensors header."""


@dataclass(frozen=True)
class TensorSpan:
    """One tensor's bytes, `payload[start:end]` (absolute offsets), and what golf recorded of it:
    for the codes of a quantized tensor its bit width and tensor group."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int
    bits: int = 8
    group: str = "other"

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def is_code(self) -> bool:
        """Quantized codes: int8, one symbol per byte, named `*.q`."""
        return self.dtype == "I8" and self.name.endswith(QUANT_SUFFIX) and self.size > 0

    @property
    def matrix_shape(self) -> tuple[int, int]:
        """(rows, columns) of the tensor seen as its first dimension x the rest."""
        rows = self.shape[0] if self.shape else 1
        return rows, self.size // max(rows, 1)


@dataclass(frozen=True)
class Header:
    spans: list[TensorSpan]  # by offset
    metadata: dict[str, str]  # `__metadata__`, empty when there is none
    end: int  # where the tensor bytes begin

    @property
    def data_len(self) -> int:
        """Length of the whole file the header describes."""
        return max([s.end for s in self.spans], default=self.end)

    def golf(self) -> dict:
        """golf's metadata document ({} when absent or not JSON)."""
        try:
            doc = json.loads(self.metadata.get(META_KEY, "{}"))
        except json.JSONDecodeError:
            return {}
        return doc if isinstance(doc, dict) else {}


def _storage(golf: dict) -> dict:
    table = golf.get("extra", {}).get("tensors", {}) if isinstance(golf.get("extra"), dict) else {}
    return table if isinstance(table, dict) else {}


def read_header(data: bytes, total_len: int | None = None) -> Header:
    """Parse the header at the start of `data`.

    `data` needs to hold only the header (a decoder may have nothing else yet); every span must fit
    in `total_len` (the whole file's length, `len(data)` by default).

    Raises:
        HeaderError: `data` does not start with a readable safetensors header.
    """
    total_len = len(data) if total_len is None else total_len
    if len(data) < _LEN_BYTES:
        raise HeaderError("too short for a safetensors header")
    n = int.from_bytes(data[:_LEN_BYTES], "little")
    if n > len(data) - _LEN_BYTES:
        raise HeaderError("safetensors header length runs past the data")
    try:
        header = json.loads(data[_LEN_BYTES:_LEN_BYTES + n])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HeaderError("safetensors header is not JSON") from None
    if not isinstance(header, dict):
        raise HeaderError("safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    base = _LEN_BYTES + n
    partial = Header([], metadata if isinstance(metadata, dict) else {}, base)
    storage = _storage(partial.golf())
    spans = []
    for name, info in header.items():
        try:
            begin, end = (int(x) for x in info["data_offsets"])
            dtype, shape = str(info["dtype"]), tuple(int(d) for d in info["shape"])
        except (KeyError, TypeError, ValueError):
            raise HeaderError(f"safetensors entry {name!r} has no valid dtype/shape/offsets") from None
        if not 0 <= begin <= end or base + end > total_len:
            raise HeaderError(f"safetensors entry {name!r} lies outside the payload")
        entry = storage.get(name.removesuffix(QUANT_SUFFIX), {}) if name.endswith(QUANT_SUFFIX) else {}
        entry = entry if isinstance(entry, dict) else {}
        spans.append(TensorSpan(name, dtype, shape, base + begin, base + end,
                                bits=int(entry.get("bits", 8)),
                                group=str(entry.get("group", "other"))))
    spans.sort(key=lambda s: (s.start, s.end, s.name))
    return Header(spans, partial.metadata, base)
