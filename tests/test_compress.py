import pytest

from stages.compress import (CODECS, BlobError, code_bytes, code_files, compress, pack, size_report,
                             unpack)
from stages.config import CompressParams


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_round_trip_is_byte_exact(quantized_path, codec):
    payload = quantized_path.read_bytes()
    blob = pack(payload, codec, level=3 if codec == "zstd" else None)
    out = unpack(blob, "b.golf")
    assert out.payload == payload and out.codec == codec and out.compressed_bytes == len(blob)


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


def test_checksum_catches_a_consistent_but_wrong_payload(quantized_path):
    payload = quantized_path.read_bytes()
    blob = bytearray(pack(payload, "lzma"))
    # Flip one bit of the stored checksum: the payload decompresses fine but no longer matches.
    pos = 8 + 2 + 1 + len("lzma") + 1 + len("plain") + 8
    blob[pos] ^= 1
    with pytest.raises(BlobError, match="checksum mismatch"):
        unpack(bytes(blob), "m.golf")


def test_compress_accounts_model_plus_code(quantized_path):
    blob, report = compress(quantized_path.read_bytes(), "q", CompressParams(codec="zstd", level=3))
    assert report["model_bytes"] == len(blob)
    assert report["code_bytes"] == code_bytes() > 10_000
    assert report["total_bytes"] == len(blob) + report["code_bytes"]
    assert report["fits"] and report["headroom_bytes"] == 16_000_000 - report["total_bytes"]
    names = {p.name for p in code_files()}
    assert {"compress.py", "model.py", "main.py"} <= names
    assert not size_report(16_000_001, 16_000_000)["fits"]


def test_compress_refuses_non_artifacts_and_bad_levels(quantized_path):
    with pytest.raises(Exception, match="not a readable safetensors artifact"):
        compress(b"\x00" * 64, "junk.bin", CompressParams())
    with pytest.raises(BlobError, match="compress.level 30 is out of range for zstd"):
        compress(quantized_path.read_bytes(), "q", CompressParams(level=30))
    with pytest.raises(BlobError, match="compress.codec 'zip' is not available"):
        compress(quantized_path.read_bytes(), "q", CompressParams(codec="zip"))
