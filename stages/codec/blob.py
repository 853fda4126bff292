"""The `.golf` blob: one self-describing, checksummed file per model, and the codec registry.

Blob layout (all integers little-endian):

    magic    8 bytes   b"GOLFBLOB"
    version  u16       BLOB_VERSION (2; version 1 blobs, which have no layout field, still read)
    codec    u8 length + ASCII name ("zstd", "brotli", "lzma", "ans", "ans-columns")
    layout   u8 length + ASCII name ("plain", "shuffle", "grouped", "bitpack"; layouts.py)
    raw_len  u64       length of the payload before compression
    sha256   32 bytes  of the payload before compression (also the hash of the artifact it holds)
    comp_len u64       length of what follows
    data     comp_len bytes

The payload is the artifact file exactly as `golf quantize` wrote it, so decompression (and undoing
the layout) gives back those bytes, checked against the stored SHA-256; a damaged or truncated blob
is refused. `read_artifact` reads either an artifact file or a blob holding one.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stages.artifacts import Artifact, ArtifactError, from_bytes, to_bytes
from stages.codec import generic
from stages.errors import GolfError
from stages.files import sha256_bytes

MAGIC = b"GOLFBLOB"
BLOB_VERSION = 2
READABLE_VERSIONS = (1, 2)
_FIXED = struct.Struct("<8sH")


class BlobError(GolfError):
    """A blob that is damaged, truncated, or written by an unknown version or codec."""


@dataclass(frozen=True)
class Codec:
    compress: Callable[[bytes, int], bytes]
    decompress: Callable[[bytes], bytes]
    default_level: int  # the strongest setting
    levels: range


CODECS: dict[str, Codec] = {
    "zstd": Codec(generic.zstd_compress, generic.zstd_decompress, 22, range(1, 23)),
    "brotli": Codec(generic.brotli_compress, generic.brotli_decompress, 11, range(0, 12)),
    "lzma": Codec(generic.lzma_compress, generic.lzma_decompress, 9, range(0, 10)),
    # Entropy-codes each tensor group's int8 codes (ans.py); it has no levels to choose.
    "ans": Codec(lambda data, level: _ans().compress(data, level),
                 lambda body: _ans().decompress(body), 0, range(0, 1)),
    # ans, with a group's codes under column contexts where they code smaller (columns.py).
    "ans-columns": Codec(lambda data, level: _ans().compress(data, level, by_columns=True),
                         lambda body: _ans().decompress(body), 0, range(0, 1)),
}
ANS_CODECS = ("ans", "ans-columns")


def get_codec(name: str) -> Codec:
    if name not in CODECS:
        raise BlobError(f"compress.codec {name!r} is not available (known: {', '.join(CODECS)})")
    return CODECS[name]


def is_blob(data: bytes) -> bool:
    return data[:len(MAGIC)] == MAGIC


# The ans codec and the layouts are imported when first used, so that a submission bundle whose
# run needs neither (zstd, plain layout) leaves them out.
LAYOUT_NAMES = ("plain", "shuffle", "grouped", "bitpack")


def _ans():
    from stages.codec import ans
    return ans


def _get_layout(name: str):
    if name not in LAYOUT_NAMES:
        raise BlobError(f"compress.layout {name!r} is not available "
                        f"(known: {', '.join(LAYOUT_NAMES)})")
    if name == "plain":
        return (lambda b: b), (lambda b: b)
    from stages.codec.layouts import LAYOUTS
    return LAYOUTS[name]


def pack(payload: bytes, codec_name: str, level: int | None = None, layout: str = "plain") -> bytes:
    """Lay out `payload`, compress it into a blob, and check that it unpacks to the same bytes."""
    codec = get_codec(codec_name)
    forward, _ = _get_layout(layout)
    if codec_name in ANS_CODECS and layout != "plain":
        raise BlobError(f"{codec_name} codes the plain layout (it finds the code tensors itself)")
    level = codec.default_level if level is None else level
    if level not in codec.levels:
        raise BlobError(f"compress.level {level} is out of range for {codec_name} "
                        f"({codec.levels.start}..{codec.levels.stop - 1})")
    body = codec.compress(forward(payload), level)
    name, layout_name = codec_name.encode("ascii"), layout.encode("ascii")
    blob = b"".join([
        _FIXED.pack(MAGIC, BLOB_VERSION), struct.pack("<B", len(name)), name,
        struct.pack("<B", len(layout_name)), layout_name,
        struct.pack("<Q", len(payload)), hashlib.sha256(payload).digest(),
        struct.pack("<Q", len(body)), body,
    ])
    if unpack(blob, "<new blob>").payload != payload:  # never ship a blob that does not round-trip
        raise BlobError(f"{codec_name} round trip failed")
    return blob


def _name(blob: bytes, pos: int, what: str, source: str) -> tuple[str, int]:
    """The length-prefixed ASCII name at `pos` (codec or layout) and the position after it."""
    (n,) = struct.unpack_from("<B", blob, pos)
    raw = blob[pos + 1:pos + 1 + n]
    if len(raw) < n:
        raise struct.error("short name")
    try:
        return raw.decode("ascii"), pos + 1 + n
    except UnicodeDecodeError:
        raise BlobError(f"{source}: the blob's {what} name {raw!r} is not ASCII (a damaged or "
                        f"foreign blob)") from None


@dataclass(frozen=True)
class Unpacked:
    payload: bytes
    codec: str
    version: int
    sha256: str
    compressed_bytes: int
    layout: str = "plain"


def unpack(blob: bytes, source: str) -> Unpacked:
    """Decompress and verify a blob; `source` names it in errors."""
    if len(blob) < _FIXED.size or not is_blob(blob):
        raise BlobError(f"{source}: not a golf blob (bad magic)")
    _, version = _FIXED.unpack_from(blob)
    if version not in READABLE_VERSIONS:
        raise BlobError(f"{source}: blob format version {version} is not supported "
                        f"(this golf reads versions {', '.join(map(str, READABLE_VERSIONS))})")
    try:
        pos = _FIXED.size
        codec_name, pos = _name(blob, pos, "codec", source)
        layout = "plain"
        if version >= 2:
            layout, pos = _name(blob, pos, "layout", source)
        (raw_len,) = struct.unpack_from("<Q", blob, pos)
        digest = blob[pos + 8:pos + 40]
        (comp_len,) = struct.unpack_from("<Q", blob, pos + 40)
        pos += 48
    except struct.error:
        raise BlobError(f"{source}: truncated blob header") from None
    body = blob[pos:]
    if len(body) != comp_len or len(digest) != 32:
        raise BlobError(f"{source}: truncated or padded blob ({len(body)} payload bytes, "
                        f"header says {comp_len})")
    for what, name, known in (("codec", codec_name, CODECS), ("layout", layout, LAYOUT_NAMES)):
        if name not in known:
            raise BlobError(f"{source}: the blob's {what} {name!r} is not one this golf reads "
                            f"(known: {', '.join(known)})")
    codec = get_codec(codec_name)
    _, inverse = _get_layout(layout)
    try:
        payload = inverse(codec.decompress(body))
    except Exception as e:  # each codec (and a layout fed damaged bytes) raises its own type
        raise BlobError(f"{source}: {codec_name} payload is damaged ({type(e).__name__})") from None
    if len(payload) != raw_len or hashlib.sha256(payload).digest() != digest:
        raise BlobError(f"{source}: checksum mismatch: the blob is damaged")
    return Unpacked(payload, codec_name, version, "sha256:" + digest.hex(), len(blob), layout)


@dataclass(frozen=True)
class ReadArtifact:
    artifact: Artifact
    file_bytes: int
    file_sha256: str
    blob: Unpacked | None  # set when the file was a .golf blob


def read_artifact(path: str | Path) -> ReadArtifact:
    """An artifact from a file that is either the artifact itself or a `.golf` blob holding one."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such file")
    data = path.read_bytes()
    blob = unpack(data, str(path)) if is_blob(data) else None
    artifact = from_bytes(blob.payload, f"{path} (inside the blob)") if blob else \
        from_bytes(data, str(path))
    return ReadArtifact(artifact, len(data), sha256_bytes(data), blob)


def packed_size(artifact: Artifact, codec_name: str, level: int | None = None) -> int:
    """Bytes of the blob `artifact` would ship as with this codec (plain layout)."""
    return len(pack(to_bytes(artifact), codec_name, level))
