"""The `.golf` blob: byte-exact round trips, refusal of damaged or foreign blobs, old versions."""

import hashlib
import struct

import pytest
import zstandard

from stages.artifacts import ArtifactError, from_bytes
from stages.codec.blob import CODECS, BlobError, is_blob, pack, packed_size, read_artifact, unpack


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_round_trip_is_byte_exact(quantized_path, codec):
    payload = quantized_path.read_bytes()
    blob = pack(payload, codec, level=3 if codec == "zstd" else None)
    out = unpack(blob, "b.golf")
    assert out.payload == payload and out.codec == codec and out.compressed_bytes == len(blob)
    assert out.sha256 == "sha256:" + hashlib.sha256(payload).hexdigest()
    assert is_blob(blob) and not is_blob(payload)


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:-10], "truncated or padded blob"),
    (lambda b: b[:20], "truncated blob header"),
    (lambda b: b"NOTAGOLF" + b[8:], "bad magic"),
    (lambda b: b[:8] + b"\x09\x00" + b[10:], "blob format version 9 is not supported"),
    (lambda b: b[:-40] + bytes(x ^ 0xFF for x in b[-40:-30]) + b[-30:], "damaged"),
])
def test_damaged_blobs_are_refused(quantized_path, damage, message):
    blob = pack(quantized_path.read_bytes(), "zstd", level=3)
    with pytest.raises(BlobError) as e:
        unpack(damage(blob), "m.golf")
    assert message in str(e.value) and str(e.value).startswith("m.golf")
    assert "\n" not in str(e.value)


def test_checksum_catches_a_consistent_but_wrong_payload(quantized_path):
    payload = quantized_path.read_bytes()
    blob = bytearray(pack(payload, "lzma"))
    # Flip one bit of the stored checksum: the payload decompresses fine but no longer matches.
    pos = 8 + 2 + 1 + len("lzma") + 1 + len("plain") + 8
    blob[pos] ^= 1
    with pytest.raises(BlobError, match="checksum mismatch"):
        unpack(bytes(blob), "m.golf")


def test_bad_codecs_levels_and_layouts_are_refused(quantized_path):
    payload = quantized_path.read_bytes()
    with pytest.raises(BlobError, match="compress.level 30 is out of range for zstd"):
        pack(payload, "zstd", 30)
    with pytest.raises(BlobError, match="compress.codec 'zip' is not available"):
        pack(payload, "zip")
    with pytest.raises(BlobError, match="ans codes the plain layout"):
        pack(payload, "ans", layout="grouped")
    with pytest.raises(BlobError, match="compress.layout 'zigzag' is not available"):
        pack(payload, "zstd", layout="zigzag")


def test_version_1_blobs_still_read(quantized_path):
    payload = quantized_path.read_bytes()
    body = zstandard.ZstdCompressor(level=3).compress(payload)
    v1 = b"".join([b"GOLFBLOB", struct.pack("<H", 1), struct.pack("<B", 4), b"zstd",
                   struct.pack("<Q", len(payload)), hashlib.sha256(payload).digest(),
                   struct.pack("<Q", len(body)), body])
    out = unpack(v1, "old.golf")
    assert out.payload == payload and out.version == 1 and out.layout == "plain"


def test_read_artifact_takes_a_blob_or_the_artifact_itself(quantized_path, tmp_path):
    blob_path = tmp_path / "m.golf"
    blob_path.write_bytes(pack(quantized_path.read_bytes(), "zstd", 3))
    direct, packed = read_artifact(quantized_path), read_artifact(blob_path)
    assert direct.blob is None and packed.blob is not None
    assert packed.blob.sha256 == direct.file_sha256
    assert packed.file_bytes == blob_path.stat().st_size
    assert packed.artifact.metadata() == direct.artifact.metadata()
    assert packed_size(direct.artifact, "zstd", 3) == packed.file_bytes
    with pytest.raises(ArtifactError, match="no such file"):
        read_artifact(tmp_path / "missing.golf")
    assert from_bytes(packed.blob.payload, "p").kind == "quantized"


@pytest.mark.parametrize("name, message", [
    (b"\xffstd", r"the blob's codec name b'\\xffstd' is not ASCII"),
    (b"evil", r"the blob's codec 'evil' is not one this golf reads \(known: zstd, "),
])
def test_a_foreign_codec_name_is_named_with_the_file(quantized_path, name, message):
    """U2: not 'truncated blob header', and the file is named."""
    blob = pack(quantized_path.read_bytes(), "zstd", 1)
    start = len(b"GOLFBLOB") + 2 + 1
    assert blob[start:start + 4] == b"zstd"
    with pytest.raises(BlobError, match=f"^m.golf: {message}"):
        unpack(blob[:start] + name + blob[start + 4:], "m.golf")
