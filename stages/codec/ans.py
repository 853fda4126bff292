"""The `ans` codec: each tensor group's int8 codes under its own histogram, with rANS.

Quantized codes are close to independent draws from a per-group distribution, so an order-0 model
per group (the tensor group each code tensor's storage entry names) coded with asymmetric numeral systems gets within a fraction of
a percent of their entropy (0.13% over it on 1.2 M Gaussian int6 codes, mostly the stored
histograms, where zstd-22 spends 0.7% and brotli-11 0.6%), and codes several times faster than
zstd-22. Codes with structure beyond a histogram (repeated rows) are another matter: there the
dictionary codecs can win, and `golf compress --report` shows it. The coder is constriction's
`AnsCoder`; the rest of the payload (safetensors header, scales, float tensors) goes to the smaller
of zstd-22 and brotli-11.

Body layout (the `data` of a blob; integers little-endian):

    mode     u8   1: split (below); 0: not a quantized artifact, the whole payload as one stream;
                  2: split with column or row contexts (the ans-columns codec: columns.py)
    mode 1:  u8 group count, then per group:
               name     u8 length + ASCII
               tensors  u32 count + u32 each: index into the header's tensors, ordered by offset
               model    i8 lowest symbol, u16 alphabet size, a LEB128 varint count per symbol
               code     u32 word count + u32 words (the AnsCoder's output)
             then the stream of the rest: the payload without the code tensors' bytes
    stream:  u8 0 (zstd) or 1 (brotli), then that codec's output to the end of the body

The decoder reads the code tensors' positions from the header inside the rest, so the payload is
rebuilt byte for byte; blob.py checks it against the blob's SHA-256 as for any codec.
"""

from __future__ import annotations

import struct

import constriction
import numpy as np

from stages.codec import generic, spans
from stages.tensorfile import TensorSpan, read_header

_MODE_WHOLE, MODE_SPLIT, MODE_COLUMNS = 0, 1, 2  # 2: the ans-columns codec's (columns.py)
_ZSTD, _BROTLI = 0, 1


# ---------------------------------------------------------------------------------------------------
# One group's symbols: histogram + ANS words
# ---------------------------------------------------------------------------------------------------

def histogram(sym: np.ndarray) -> tuple[int, np.ndarray]:
    """The lowest symbol of `sym` (int8, non-empty) and the count of each value from there up."""
    lo, hi = int(sym.min()), int(sym.max())
    if lo == hi:  # constriction needs an alphabet of two symbols or more: add an unused one
        lo, hi = (lo - 1, hi) if hi == 127 else (lo, hi + 1)
    return lo, np.bincount(sym.astype(np.int32) - lo, minlength=hi - lo + 1).astype(np.uint32)


def _model(counts: np.ndarray):
    # Probabilities from counts, computed the same way on both sides so that the (deterministic)
    # fixed-point model matches; constriction gives every symbol of the range a nonzero
    # probability, so each symbol present (count >= 1) is codable.
    p = counts.astype(np.float64)
    return constriction.stream.model.Categorical(p / p.sum(), perfect=False)


def encode_symbols(sym: np.ndarray) -> bytes:
    """One group's record after its tensor list: histogram, then the ANS words.

    Args:
        sym: the group's codes, int8, at least one.

    Returns:
        The bytes `read_record` reads back; their length is the group's real coded size.
    """
    lo, counts = histogram(sym)
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(sym.astype(np.int32) - lo, _model(counts))
    words = coder.get_compressed().astype("<u4")
    return b"".join([struct.pack("<bH", lo, len(counts)), _varints(counts),
                     struct.pack("<I", len(words)), words.tobytes()])


def read_record(body: bytes, pos: int) -> tuple[int, np.ndarray, np.ndarray, int]:
    """Read one record written by `encode_symbols` at `pos`, without decoding it yet.

    Returns:
        The lowest symbol, the counts, the ANS words and the position after the record.
    """
    lo, n = struct.unpack_from("<bH", body, pos)
    if n == 0 or lo + n - 1 > 127:
        raise ValueError(f"bad symbol range (lowest {lo}, {n} symbols)")
    counts, pos = _read_varints(body, pos + 3, n)
    (n_words,) = struct.unpack_from("<I", body, pos)
    words = _u32_array(body, pos + 4, n_words)
    return lo, counts, words, pos + 4 + 4 * n_words


def decode_symbols(lo: int, counts: np.ndarray, words: np.ndarray) -> np.ndarray:
    """The int8 codes of one record (as returned by `read_record`)."""
    coder = constriction.stream.stack.AnsCoder(words)
    sym = coder.decode(_model(counts), int(counts.sum(dtype=np.uint64))) + lo
    if not coder.is_empty():
        raise ValueError("ANS stream has words left over")
    return sym.astype(np.int8)


def _varints(values: np.ndarray) -> bytes:
    # Counts as LEB128 varints: a small group's counts fit in one or two bytes each, where u32 would
    # spend a kilobyte per int8 histogram.
    out = bytearray()
    for v in values.tolist():
        while v >= 0x80:
            out.append(v & 0x7F | 0x80)
            v >>= 7
        out.append(v)
    return bytes(out)


def _read_varints(body: bytes, pos: int, n: int) -> tuple[np.ndarray, int]:
    values = []
    for _ in range(n):
        v = shift = 0
        while True:
            if pos >= len(body) or shift > 28:  # a u32 count needs at most 5 bytes
                raise ValueError("bad varint in a histogram")
            byte = body[pos]
            pos += 1
            v |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        values.append(v)
    return np.array(values, dtype=np.uint64), pos


def _u32_array(body: bytes, pos: int, n: int) -> np.ndarray:
    if pos + 4 * n > len(body):
        raise ValueError("record runs past the end of the body")
    return np.frombuffer(body, "<u4", n, pos).astype(np.uint32)


# ---------------------------------------------------------------------------------------------------
# The rest: a general-purpose stream
# ---------------------------------------------------------------------------------------------------

def _pack_stream(data: bytes) -> bytes:
    """`data` with the smaller of zstd-22 and brotli-11, tagged with which."""
    z = bytes([_ZSTD]) + generic.zstd_compress(data, 22)
    b = bytes([_BROTLI]) + generic.brotli_compress(data, 11)
    return min(z, b, key=len)


def unpack_stream(stream: bytes) -> bytes:
    if not stream or stream[0] not in (_ZSTD, _BROTLI):
        raise ValueError("unknown stream codec")
    if stream[0] == _ZSTD:
        return generic.zstd_decompress(stream[1:])
    return generic.brotli_decompress(stream[1:])


# ---------------------------------------------------------------------------------------------------
# The codec
# ---------------------------------------------------------------------------------------------------

def group_heads(payload: bytes) -> dict[str, tuple[list[TensorSpan], bytes]]:
    """Each tensor group's code tensors and the start of its record: name, tensor list."""
    codes = spans.code_spans(payload)
    index = {s: i for i, s in enumerate(read_header(payload).spans)}
    heads = {}
    for group, members in spans.group_spans(codes).items():
        name = group.encode("ascii")
        heads[group] = members, b"".join([struct.pack("<B", len(name)), name,
                                          struct.pack("<I", len(members)),
                                          np.array([index[s] for s in members], "<u4").tobytes()])
    return heads


def group_records(payload: bytes, by_columns: bool = False) -> dict[str, bytes]:
    """Each tensor group's record in the body: exactly the bytes the group costs in a blob.

    Args:
        payload: a safetensors payload; one without int8 `*.q` tensors has no groups.
        by_columns: as the ans-columns codec writes them (columns.py).

    Returns:
        Group name -> record (name, tensor list, histogram, ANS words), in canonical group order.
    """
    if not spans.code_spans(payload):
        return {}
    if by_columns:
        from stages.codec import columns
        return columns.group_records(payload)[1]
    return {g: head + encode_symbols(spans.symbols(payload, members))
            for g, (members, head) in group_heads(payload).items()}


def compress(payload: bytes, level: int = 0, by_columns: bool = False) -> bytes:
    """The `ans` body of `payload` (the level is ignored: the coder has no settings).

    Args:
        payload: any bytes; a safetensors file with `*.q` int8 tensors gets the split layout,
            anything else (a float checkpoint) one general-purpose stream.
        level: unused, for the `Codec` interface.
        by_columns: as the ans-columns codec (column contexts where they code smaller).

    Returns:
        The body that `decompress` turns back into `payload`.
    """
    if not spans.code_spans(payload):
        return bytes([_MODE_WHOLE]) + _pack_stream(payload)
    if by_columns:
        from stages.codec import columns
        mode, records = columns.group_records(payload)
    else:
        mode, records = MODE_SPLIT, group_records(payload)
    rest = spans.cut(payload, spans.code_spans(payload))
    return b"".join([bytes([mode, len(records)]), *records.values(), _pack_stream(rest)])


def decompress(body: bytes) -> bytes:
    """Inverse of `compress`.

    Raises:
        ValueError, struct.error: a damaged body (blob.unpack reports it in one line).
    """
    if not body or body[0] not in (_MODE_WHOLE, MODE_SPLIT, MODE_COLUMNS):
        raise ValueError("unknown ans body mode")
    if body[0] == _MODE_WHOLE:
        return unpack_stream(body[1:])
    if body[0] == MODE_COLUMNS:
        from stages.codec import columns
        return columns.decompress(body)
    groups, pos = [], 2
    for _ in range(body[1]):
        members, pos = read_head(body, pos)
        group, pos = read_group(body, pos, members)
        groups.append(group)
    return rebuild(unpack_stream(body[pos:]), groups)


def read_group(body: bytes, pos: int, members: np.ndarray) -> tuple[tuple, int]:
    """A group's one-histogram record at `pos` as `rebuild` takes it, and the position after."""
    lo, counts, words, pos = read_record(body, pos)
    return (members, int(counts.sum(dtype=np.uint64)),
            lambda chosen: split_codes(decode_symbols(lo, counts, words), chosen)), pos


def read_head(body: bytes, pos: int) -> tuple[np.ndarray, int]:
    """A group record's tensor indices (its name skipped), and the position after them."""
    (n,) = struct.unpack_from("<B", body, pos)
    (count,) = struct.unpack_from("<I", body, pos + 1 + n)
    return _u32_array(body, pos + 5 + n, count), pos + 5 + n + 4 * count


def split_codes(codes: np.ndarray, chosen: list[TensorSpan]) -> list[bytes]:
    """A group's decoded codes, cut into its tensors' bytes."""
    data, out, pos = codes.tobytes(), [], 0
    for s in chosen:
        out.append(data[pos:pos + s.size])
        pos += s.size
    return out


def rebuild(rest: bytes, groups: list) -> bytes:
    """Decode each group's codes and splice them back into the rest, at its tensors' offsets.
    `groups`: (tensor indices, how many codes the record holds, decode: the group's spans ->
    each tensor's bytes)."""
    total = len(rest) + sum(n for _, n, _ in groups)
    every = read_header(rest, total).spans
    placed: list[tuple[TensorSpan, bytes]] = []
    for members, n, decode in groups:
        if len(members) and int(members.max()) >= len(every):
            raise ValueError("tensor index out of range")
        chosen = [every[i] for i in members]
        # Checked before decoding, so that damaged counts cannot make us decode billions of symbols.
        if sum(s.size for s in chosen) != n:
            raise ValueError("group size does not match its tensors")
        placed += zip(chosen, decode(chosen))
    placed.sort(key=lambda p: (p[0].start, p[0].end))
    spans.check_disjoint([s for s, _ in placed])
    return spans.splice(rest, [s for s, _ in placed], [piece for _, piece in placed])
