"""`golf compress` as a stage: the size report accounts model + counted code against the limit."""

import pytest

from stages.artifacts import ArtifactError
from stages.budget import LIMIT_BYTES, BudgetError
from stages.codec.blob import BlobError, unpack
from stages.codec.compress import compress
from stages.codec.params import CompressParams


def test_report_totals_the_model_and_the_counted_code(quantized_path):
    payload = quantized_path.read_bytes()
    blob, report = compress(payload, "q", CompressParams(codec="zstd", level=3), 30_000)
    assert unpack(blob, "b").payload == payload
    assert report["model_bytes"] == len(blob)
    assert report["code_bytes"] == 30_000
    assert report["total_bytes"] == report["model_bytes"] + report["code_bytes"]
    assert report["limit_bytes"] == LIMIT_BYTES
    assert report["fits"] and report["headroom_bytes"] == LIMIT_BYTES - report["total_bytes"]
    assert (report["codec"], report["layout"], report["payload_kind"]) == ("zstd", "plain",
                                                                           "quantized")
    assert report["payload_bytes"] == len(payload)


def test_compress_limit_bytes_is_enforced(quantized_path):
    payload = quantized_path.read_bytes()
    blob, _ = compress(payload, "q", CompressParams(level=3), 0)
    _, fits = compress(payload, "q", CompressParams(level=3, limit_bytes=len(blob) + 100), 100)
    assert fits["fits"] and fits["headroom_bytes"] == 0
    with pytest.raises(BudgetError, match="q: model .* over compress.limit_bytes"):
        compress(payload, "q", CompressParams(level=3, limit_bytes=len(blob) + 100), 101)


@pytest.mark.parametrize("codec, level, expected", [("brotli", 0, 0), ("zstd", 1, 1),
                                                    ("zstd", None, 22), ("ans", None, 0)])
def test_report_gives_the_level_really_used(quantized_path, codec, level, expected):
    _, report = compress(quantized_path.read_bytes(), "q", CompressParams(codec=codec, level=level),
                         0)
    assert report["level"] == expected


def test_compress_refuses_non_artifacts_and_bad_levels(quantized_path):
    with pytest.raises(ArtifactError, match="junk.bin: not a readable safetensors artifact"):
        compress(b"\x00" * 64, "junk.bin", CompressParams(), 0)
    with pytest.raises(BlobError, match="compress.level 30 is out of range for zstd"):
        compress(quantized_path.read_bytes(), "q", CompressParams(level=30), 0)
