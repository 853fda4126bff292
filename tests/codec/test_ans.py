"""The `ans` codec: exact round trips on any bytes, damage refused, close to the entropy bound."""

import numpy as np
import pytest
import torch

from stages.codec import ans
from stages.codec.blob import BlobError, pack, unpack
from stages.codec.entropy import group_report
from stages.codec.spans import group_symbols
from stages.model.config import ModelConfig
from stages.model.gpt import GPT
from tests.conftest import quantized_payload


def _body(blob: bytes) -> bytes:
    return blob[8 + 2 + 1 + len("ans") + 1 + len("plain") + 8 + 32 + 8:]


def test_round_trip_on_a_quantized_artifact(quantized_path):
    payload = quantized_path.read_bytes()
    blob = pack(payload, "ans")
    assert unpack(blob, "a.golf").payload == payload
    assert _body(blob)[0] == 1  # the split layout: codes entropy-coded per group
    assert set(ans.group_records(payload)) == {"embedding", "attn_q", "attn_k", "attn_v",
                                               "attn_out", "mlp_up", "mlp_down"}


def test_round_trip_on_a_float_checkpoint(tiny_run):
    run, _ = tiny_run
    payload = (run / "final.safetensors").read_bytes()
    blob = pack(payload, "ans")
    assert unpack(blob, "c.golf").payload == payload
    assert _body(blob)[0] == 0  # no codes: one general-purpose stream


@pytest.mark.parametrize("payload", [b"", b"not safetensors at all", b"\xff" * 100])
def test_round_trip_on_arbitrary_bytes(payload):
    assert ans.decompress(ans.compress(payload)) == payload


def test_constant_and_extreme_codes_round_trip():
    # A constant group (alphabet of one symbol) and codes at both ends of the int8 range.
    torch.manual_seed(1)
    cfg = ModelConfig(vocab_size=64, num_layers=1, model_dim=64, num_heads=2, num_kv_heads=1)
    tensors = {k: torch.randn_like(v) for k, v in GPT(cfg).state_dict().items()}
    tensors["blocks.0.mlp.proj.weight"].zero_()
    payload = quantized_payload(tensors, cfg, bits=8)
    codes = group_symbols(payload)
    assert set(np.unique(codes["mlp_down"])) == {0} and codes["embedding"].min() == -127
    assert unpack(pack(payload, "ans"), "z.golf").payload == payload


@pytest.mark.parametrize("where", ["histogram", "words", "rest", "mode", "truncated body"])
def test_damaged_ans_blob_is_refused(quantized_path, where):
    blob = bytearray(pack(quantized_path.read_bytes(), "ans"))
    start = len(blob) - len(_body(bytes(blob)))
    name_len = blob[start + 2]
    count = int.from_bytes(blob[start + 3 + name_len:start + 7 + name_len], "little")
    hist = start + 7 + name_len + 4 * count + 3  # the first group's first count
    words = hist + 4 * int.from_bytes(blob[hist - 2:hist], "little") + 4
    if where == "truncated body":
        del blob[-5:]
    else:
        pos = {"histogram": hist, "words": words + 10, "rest": len(blob) - 50, "mode": start}[where]
        blob[pos] ^= 0x5A
    with pytest.raises(BlobError) as e:
        unpack(bytes(blob), "m.golf")
    assert str(e.value).startswith("m.golf: ") and "\n" not in str(e.value)


def test_ans_is_within_one_percent_of_the_entropy_bound(gaussian_int6):
    r = group_report(gaussian_int6, "ans", 0)
    codes = r["codes"]
    assert codes["weights"] > 1_000_000
    assert codes["bound_bytes"] <= codes["bytes"] <= 1.01 * codes["bound_bytes"]
    for row in r["groups"].values():
        assert row["bound_bytes"] <= row["bytes"]


def test_ans_blob_beats_zstd_and_brotli(gaussian_int6):
    sizes = {c: len(pack(gaussian_int6, c)) for c in ("ans", "zstd", "brotli")}
    assert sizes["ans"] < sizes["zstd"] and sizes["ans"] < sizes["brotli"], sizes
