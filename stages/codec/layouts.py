"""Reversible layouts of a quantized payload (`compress.layout`), applied before the codec and undone
after it.

- `plain`: the artifact file as it is.
- `shuffle`: all even bytes, then all odd bytes (the byte shuffle of the brotli records, stride 2),
  so that the high and low bytes of fp16 scales and float tensors sit with their own kind.
- `grouped`: the int8 codes moved after everything else, tensors of one role together across layers
  (the canonical group order), each transposed to column-major, as the best record serialised them.
- `bitpack`: each code tensor packed to its bit width (int6 takes 6 bits, not 8), offset to be
  non-negative. Packing before an entropy coder costs bytes because it hides symbol boundaries
  (docs/results.md); it is here to measure that, and for codecs that do not model symbols.

Every layout keeps the safetensors header first, so the inverse can read from it where every tensor
belongs and rebuild the payload byte for byte (the blob's checksum covers the rebuilt payload).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from stages.codec.spans import code_spans, cut, group_rank, splice
from stages.tensorfile import TensorSpan, qmax_for, read_header


def _codes_of_original(data: bytes, original_len: int | None = None) -> list[TensorSpan]:
    """Code spans of the original payload, read from the header at the start of `data` (every
    layout keeps the header first)."""
    return [s for s in read_header(data, original_len).spans if s.is_code]


# --- shuffle ------------------------------------------------------------------------------------

def _shuffle(payload: bytes) -> bytes:
    return payload[0::2] + payload[1::2]


def _unshuffle(data: bytes) -> bytes:
    out = bytearray(len(data))
    half = (len(data) + 1) // 2
    out[0::2], out[1::2] = data[:half], data[half:]
    return bytes(out)


# --- grouped -----------------------------------------------------------------------------------

def _grouped_order(spans: list[TensorSpan]) -> list[TensorSpan]:
    return sorted(spans, key=lambda s: (group_rank(s), s.name))


def _group(payload: bytes) -> bytes:
    spans = code_spans(payload)
    pieces = []
    for s in _grouped_order(spans):
        rows, cols = s.matrix_shape
        codes = np.frombuffer(payload, np.int8, s.size, s.start).reshape(rows, cols)
        pieces.append(codes.T.tobytes())  # column-major
    return cut(payload, spans) + b"".join(pieces)


def _ungroup(data: bytes) -> bytes:
    spans = _codes_of_original(data)  # same length as the original
    rest_len = len(data) - sum(s.size for s in spans)
    rest, pos, by_name = data[:rest_len], rest_len, {}
    for s in _grouped_order(spans):
        rows, cols = s.matrix_shape
        block = np.frombuffer(data, np.int8, s.size, pos).reshape(cols, rows).T
        by_name[s.name] = np.ascontiguousarray(block).tobytes()
        pos += s.size
    return splice(rest, spans, [by_name[s.name] for s in spans])


# --- bitpack -----------------------------------------------------------------------------------

def _pack(payload: bytes) -> bytes:
    spans = code_spans(payload)
    packed = []
    for s in spans:
        b, qmax = s.bits, qmax_for(s.bits)
        vals = (np.frombuffer(payload, np.int8, s.size, s.start).astype(np.int16) + qmax).astype(np.uint8)
        bits = (vals[:, None] >> np.arange(b, dtype=np.uint8)) & 1
        packed.append(np.packbits(bits.reshape(-1), bitorder="little").tobytes())
    return cut(payload, spans) + b"".join(packed)


def _unpack(data: bytes) -> bytes:
    original_len = read_header(data, total_len=1 << 62).data_len  # the packed data is shorter
    spans = _codes_of_original(data, original_len)
    rest_len = original_len - sum(s.size for s in spans)
    rest, pos, pieces = data[:rest_len], rest_len, []
    for s in spans:
        b, qmax = s.bits, qmax_for(s.bits)
        nbytes = (s.size * b + 7) // 8
        bits = np.unpackbits(np.frombuffer(data, np.uint8, nbytes, pos), count=s.size * b,
                             bitorder="little").reshape(s.size, b)
        vals = (bits.astype(np.int16) << np.arange(b, dtype=np.int16)).sum(axis=1) - qmax
        pieces.append(vals.astype(np.int8).tobytes())
        pos += nbytes
    return splice(rest, spans, pieces)


LAYOUTS: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {
    "plain": (lambda b: b, lambda b: b),
    "shuffle": (_shuffle, _unshuffle),
    "grouped": (_group, _ungroup),
    "bitpack": (_pack, _unpack),
}
