"""Column and row contexts for the `ans` codec: a group's codes split by how wide their column
(or row) runs.

A trained matrix's columns differ in scale (an MLP's hidden units, an embedding's dimensions), and
a per-row quantizer leaves that in the codes: a wide column's codes are wide. Rows differ where the
steps are not set by the row's own spread (quantize.fisher_alpha gives the rows the loss hardly
sees coarse steps, so narrow codes). Per tensor, each column gets one of BUCKETS buckets by the
mean |code| of the column (equally filled buckets), sent as ID_BITS bits per column. The group's
codes in bucket b (tensor after tensor, row-major within the tensor's bucket-b columns) are one
stream under their own histogram. Row contexts are the same on the transposed matrices. ans.py
uses these for a group only where they code smaller than one histogram; `golf compress --report`
shows what a column context could save at most (contexts.py).

The body is ans.py's split body with mode 2, and after each group's tensor list one byte more:
1, then the group's one record as in ans; or BUCKETS (columns) or ROW_BUCKETS (rows: the same
section with rows for columns), then (little-endian)

    per tensor: u32 columns, then its bucket ids, ID_BITS each, packed (np.packbits order)
    u8 record count, then per record: u8 bucket, record (ans.encode_symbols)

A bucket without codes has no record; the decoder checks that the records are exactly the
non-empty buckets, each as long as its columns say. When no group gains, the body is plain
ans (mode 1), byte for byte.
"""

from __future__ import annotations

import struct

import numpy as np

from stages.codec import ans, spans
from stages.codec.contexts import quantile_buckets

ONE_HISTOGRAM = 1  # a group's context byte: no column contexts
BUCKETS = 8
ROW_BUCKETS = 0x80 | BUCKETS  # a group's context byte: row contexts
ID_BITS = 3  # enough for BUCKETS


def column_buckets(q: np.ndarray) -> np.ndarray:
    """Each column's bucket (cols,) uint8, from the mean |code| of a (rows, cols) code matrix."""
    return quantile_buckets(np.abs(q.astype(np.int16)).mean(0), BUCKETS).astype(np.uint8)


def pack_ids(ids: np.ndarray) -> bytes:
    bits = np.unpackbits(ids.astype(np.uint8)[:, None], axis=1)[:, 8 - ID_BITS:]  # (cols, ID_BITS)
    return np.packbits(bits.ravel()).tobytes()


def unpack_ids(body: bytes, pos: int, cols: int) -> tuple[np.ndarray, int]:
    n = (cols * ID_BITS + 7) // 8
    if pos + n > len(body):
        raise ValueError("column buckets run past the end of the body")
    bits = np.unpackbits(np.frombuffer(body, np.uint8, n, pos))[:cols * ID_BITS]
    weights = 1 << np.arange(ID_BITS - 1, -1, -1)
    return (bits.reshape(cols, ID_BITS) * weights).sum(1).astype(np.uint8), pos + n


def encode_section(mats: list[np.ndarray], by_rows: bool = False) -> bytes:
    """The section of a group whose code matrices (each (rows, cols) int8) are `mats`, from its
    BUCKETS (ROW_BUCKETS) byte on."""
    if by_rows:
        mats = [q.T for q in mats]  # (cols, rows): a row's codes are a column here
        # Buckets by the whole group's rows: a bucket then means one width in every tensor
        # (steps set by the loss differ more between tensors than within one).
        means = [np.abs(q.astype(np.int16)).mean(0) for q in mats]
        together = quantile_buckets(np.concatenate(means), BUCKETS).astype(np.uint8)
        ids = np.split(together, np.cumsum([m.size for m in means])[:-1])
    else:
        ids = [column_buckets(q) for q in mats]
    out = [struct.pack("<B", ROW_BUCKETS if by_rows else BUCKETS)]
    for q, t_ids in zip(mats, ids, strict=True):
        out += [struct.pack("<I", q.shape[1]), pack_ids(t_ids)]
    streams = [np.concatenate([q[:, t_ids == b].ravel() for q, t_ids in zip(mats, ids)])
               for b in range(BUCKETS)]
    records = [(b, s) for b, s in enumerate(streams) if s.size]
    out.append(struct.pack("<B", len(records)))
    out += [struct.pack("<B", b) + ans.encode_symbols(s) for b, s in records]
    return b"".join(out)


def read_section(body: bytes, pos: int, tensors: int) -> tuple[tuple[list, dict], int]:
    """Parse a section at `pos` (just after its u8 BUCKETS) for a group of `tensors` tensors,
    without decoding: ((bucket ids per tensor, bucket -> record model), the position after it)."""
    ids = []
    for _ in range(tensors):
        (cols,) = struct.unpack_from("<I", body, pos)
        t_ids, pos = unpack_ids(body, pos + 4, cols)
        if t_ids.size and int(t_ids.max()) >= BUCKETS:
            raise ValueError("column bucket out of range")
        ids.append(t_ids)
    (n_records,) = struct.unpack_from("<B", body, pos)
    models, pos = {}, pos + 1
    for _ in range(n_records):
        (b,) = struct.unpack_from("<B", body, pos)
        if b >= BUCKETS or b in models:
            raise ValueError("bad column bucket record")
        *model, pos = ans.read_record(body, pos + 1)
        models[b] = model
    return (ids, models), pos


def decode_section(section: tuple[list, dict], shapes: list[tuple[int, int]],
                   by_rows: bool = False) -> list[np.ndarray]:
    """Each tensor's codes (row-major, int8) from a parsed section and the tensors' (rows, cols)."""
    if by_rows:
        t = decode_section(section, [(c, r) for r, c in shapes])
        return [q.reshape(c, r).T.ravel() for q, (r, c) in zip(t, shapes, strict=True)]
    ids, models = section
    if [len(t) for t in ids] != [c for _, c in shapes]:
        raise ValueError("column buckets do not match the tensors' columns")
    sizes = {b: sum(rows * int((t == b).sum()) for (rows, _), t in zip(shapes, ids))
             for b in range(BUCKETS)}
    if set(models) != {b for b, n in sizes.items() if n}:
        raise ValueError("column bucket records do not match the buckets in use")
    out = [np.zeros(shape, np.int8) for shape in shapes]
    for b, (lo, counts, words) in sorted(models.items()):
        if int(counts.sum(dtype=np.uint64)) != sizes[b]:  # checked before decoding anything
            raise ValueError("column bucket size does not match its columns")
        stream, pos = ans.decode_symbols(lo, counts, words), 0
        for q, t_ids in zip(out, ids):
            cols = t_ids == b
            n = q.shape[0] * int(cols.sum())
            q[:, cols] = stream[pos:pos + n].reshape(q.shape[0], -1)  # (rows, bucket-b columns)
            pos += n
    return [q.ravel() for q in out]


def group_records(payload: bytes) -> tuple[int, dict[str, bytes]]:
    """The body mode and each group's record: ans.group_records, with column or row contexts for
    the groups where they code smaller than one histogram (and plain ans when no group gains)."""
    heads, plain, sections = {}, {}, {}
    for group, (members, head) in ans.group_heads(payload).items():
        heads[group] = head
        plain[group] = ans.encode_symbols(spans.symbols(payload, members))
        mats = [spans.matrix(payload, s) for s in members]
        tries = [bytes([ONE_HISTOGRAM]) + plain[group]]
        tries += [encode_section(mats, by_rows) for by_rows in (False, True)
                  if any(q.shape[0 if by_rows else 1] > 1 for q in mats)]
        sections[group] = min(tries, key=len)  # the first of the shortest: one histogram on ties
    if sum(map(len, sections.values())) >= sum(map(len, plain.values())):
        return ans.MODE_SPLIT, {g: heads[g] + plain[g] for g in heads}
    return ans.MODE_COLUMNS, {g: heads[g] + sections[g] for g in heads}


def decompress(body: bytes) -> bytes:
    """Inverse of the ans-columns body (mode 2)."""
    groups, pos = [], 2
    for _ in range(body[1]):
        members, pos = ans.read_head(body, pos)
        if pos >= len(body) or body[pos] not in (ONE_HISTOGRAM, BUCKETS, ROW_BUCKETS):
            raise ValueError("unknown group context")
        if body[pos] == ONE_HISTOGRAM:
            group, pos = ans.read_group(body, pos + 1, members)
            groups.append(group)
            continue
        by_rows = body[pos] == ROW_BUCKETS
        section, pos = read_section(body, pos + 1, len(members))
        n = sum(int(c.sum(dtype=np.uint64)) for _, c, _ in section[1].values())
        groups.append((members, n, lambda chosen, sec=section, r=by_rows: [
            q.tobytes() for q in decode_section(sec, [s.matrix_shape for s in chosen], r)]))
    return ans.rebuild(ans.unpack_stream(body[pos:]), groups)
