"""The `ans` codec: byte-exact round trips, damage, and size against zstd and brotli."""

import numpy as np
import pytest
import torch

from stages import ans, artifacts, layout
from stages.artifacts import Artifact
from stages.compress import BlobError, pack, unpack
from stages.config import ModelConfig, QuantizeParams
from stages.model import GPT
from stages.quantize import quantize


def _body(blob: bytes) -> bytes:
    return blob[8 + 2 + 1 + len("ans") + 8 + 32 + 8:]


def _quantized_payload(tensors: dict[str, torch.Tensor], cfg: ModelConfig, bits: int) -> bytes:
    ckpt = Artifact("checkpoint", tensors, cfg)
    q = quantize(ckpt, QuantizeParams(bits=bits, keep_float_max_numel=1024), parents={})
    return artifacts.to_bytes(q)


@pytest.fixture(scope="module")
def gaussian_int6() -> bytes:
    """A 2-layer x 256 model (1.18 M quantized weights) of random Gaussian weights, int6."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=1024, num_layers=2, model_dim=256, num_heads=4, num_kv_heads=2)
    tensors = {k: torch.randn_like(v) * 0.02 for k, v in GPT(cfg).state_dict().items()}
    return _quantized_payload(tensors, cfg, bits=6)


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
    payload = _quantized_payload(tensors, cfg, bits=8)
    codes = layout.group_symbols(payload)
    assert set(np.unique(codes["mlp_down"])) == {0} and codes["embedding"].min() == -127
    assert unpack(pack(payload, "ans"), "z.golf").payload == payload


def test_cut_and_splice_are_inverse(quantized_path):
    payload = quantized_path.read_bytes()
    spans = layout.code_spans(payload)
    rest = layout.cut(payload, spans)
    assert len(rest) == len(payload) - sum(s.size for s in spans)
    assert layout.splice(rest, spans, [payload[s.start:s.end] for s in spans]) == payload
    assert layout.code_spans(b"\x00" * 64) == []


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


def test_ans_blob_beats_zstd_and_brotli(gaussian_int6):
    sizes = {c: len(pack(gaussian_int6, c)) for c in ("ans", "zstd", "brotli")}
    assert sizes["ans"] < sizes["zstd"] and sizes["ans"] < sizes["brotli"], sizes
