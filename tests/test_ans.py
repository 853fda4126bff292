"""The `ans` codec, the per-group entropy report, and `golf compress --report`."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from golfcli.main import cli
from stages import ans, artifacts, layout
from stages.artifacts import Artifact
from stages.compress import BlobError, pack, unpack
from stages.config import ModelConfig, QuantizeParams
from stages.entropy import group_report, order0_bits
from stages.model import GPT
from stages.quant.groups import GROUPS
from stages.quantize import quantize


def _body(blob: bytes) -> bytes:
    return blob[8 + 2 + 1 + len("ans") + 1 + len("plain") + 8 + 32 + 8:]


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


def test_order0_bits():
    assert order0_bits(np.array([3, -3] * 50, dtype=np.int8)) == pytest.approx(100.0)
    assert order0_bits(np.zeros(10, dtype=np.int8)) == 0.0
    assert order0_bits(np.zeros(0, dtype=np.int8)) == 0.0


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


@pytest.mark.parametrize("codec, level", [("ans", 0), ("zstd", 3)])
def test_report_adds_up(quantized_path, codec, level):
    payload = quantized_path.read_bytes()
    r = group_report(payload, codec, level)
    rows = r["groups"].values()
    q = artifacts.from_bytes(payload, "q")
    assert r["codes"]["weights"] == sum(row["weights"] for row in rows) == sum(
        t.numel() for n, t in q.tensors.items() if n.endswith(".q"))
    assert r["codes"]["bytes"] == sum(row["bytes"] for row in rows)
    assert r["codes"]["bound_bytes"] == pytest.approx(sum(row["bound_bytes"] for row in rows),
                                                      abs=1.0)
    assert list(r["groups"]) == [g for g in GROUPS if g in r["groups"]]
    if codec == "ans":  # an order-0 coder cannot beat the order-0 bound; zstd, using context, can
        assert all(row["bound_bytes"] <= row["bytes"] for row in rows)
        assert r["codes"]["bytes"] < len(pack(payload, "ans"))  # the records are part of the blob


def test_cli_report_bare_and_to_a_file(quantized_path, tmp_path):
    runner = CliRunner()
    bare = runner.invoke(cli, ["compress", str(quantized_path), "--out", str(tmp_path / "a.golf"),
                               "--codec", "ans", "--report"])
    assert bare.exit_code == 0, bare.output
    assert "attn_q" in bare.output and "x bound" in bare.output and "/ 16,000,000" in bare.output
    assert not (tmp_path / "-").exists()
    out = tmp_path / "size.json"
    r = runner.invoke(cli, ["compress", str(quantized_path), "--out", str(tmp_path / "b.golf"),
                            "--report", str(out), "--codec", "ans"])
    assert r.exit_code == 0, r.output
    size = json.loads(out.read_text())
    assert size["model_bytes"] == (tmp_path / "b.golf").stat().st_size
    assert size["codec"] == "ans"
    assert size["total_bytes"] == size["model_bytes"] + size["code_bytes"]
    assert size["codes"]["bytes"] == sum(g["bytes"] for g in size["groups"].values())
    assert "mlp_down" in r.output
