"""The `ans` codec: exact round trips on any bytes, damage refused, close to the entropy bound."""

import numpy as np
import pytest
import torch

from stages.codec import ans, columns, spans
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
    assert _body(blob)[0] in (1, 2)  # split: codes per group (2: column contexts where they pay)
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


def _column_scaled(seed: int) -> bytes:
    """Gaussian weights, int6 per row, the MLP's down projections with columns of four spreads."""
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=256, num_layers=2, model_dim=128, num_heads=4, num_kv_heads=2)
    tensors = {k: torch.randn_like(v) * 0.02 for k, v in GPT(cfg).state_dict().items()}
    for k, w in tensors.items():
        if k.endswith("mlp.proj.weight"):  # (model_dim, hidden)
            tensors[k] = w * torch.tensor([0.1, 0.5, 1.0, 3.0]).repeat_interleave(w.shape[1] // 4)
    return quantized_payload(tensors, cfg, bits=6)


def test_column_contexts_code_smaller_where_columns_differ_and_round_trip():
    payload = _column_scaled(0)
    with_columns, plain = pack(payload, "ans-columns"), pack(payload, "ans")
    assert unpack(with_columns, "c.golf").payload == payload
    by_columns = ans.group_records(payload, by_columns=True)
    assert len(by_columns["mlp_down"]) < 0.9 * len(ans.group_records(payload)["mlp_down"])
    assert len(with_columns) < len(plain)
    r = group_report(payload, "ans-columns", 0)["groups"]["mlp_down"]
    assert r["bytes"] < r["bound_bytes"]  # below what one histogram can reach


def _row_widths(seed: int) -> bytes:
    """Gaussian weights, int6 per row with the clip at the row's maximum; in the MLP's up
    projections three rows in four hold one large outlier, so their other codes are narrow (rows
    of different width, as steps set by the loss make them: quantize.fisher_alpha)."""
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=256, num_layers=2, model_dim=128, num_heads=4, num_kv_heads=2)
    tensors = {k: torch.randn_like(v) * 0.02 for k, v in GPT(cfg).state_dict().items()}
    for k, w in tensors.items():
        if k.endswith("mlp.fc.weight"):  # (hidden, model_dim)
            w[torch.arange(w.shape[0]) % 4 != 0, 0] = 1.0
    return quantized_payload(tensors, cfg, bits=6, clip_percentile=100.0)


def test_row_contexts_code_smaller_where_rows_differ_and_round_trip():
    payload = _row_widths(0)
    with_rows, plain = pack(payload, "ans-columns"), pack(payload, "ans")
    assert unpack(with_rows, "r.golf").payload == payload
    records = ans.group_records(payload, by_columns=True)
    members, _ = ans.group_heads(payload)["mlp_up"]
    by_rows = columns.encode_section([spans.matrix(payload, m) for m in members], by_rows=True)
    assert records["mlp_up"].endswith(by_rows)  # the group chose its row contexts
    assert len(records["mlp_up"]) < 0.9 * len(ans.group_records(payload)["mlp_up"])
    assert len(with_rows) < len(plain)


def test_without_column_structure_ans_columns_writes_the_ans_body(gaussian_int6):
    body = _body(pack(gaussian_int6, "ans"))
    with_columns = pack(gaussian_int6, "ans-columns")
    assert with_columns.endswith(body)  # same body; only the codec name differs


@pytest.mark.parametrize("where", ["bucket ids", "record bucket", "record count", "context"])
def test_damaged_column_sections_are_refused(where):
    payload = _column_scaled(1)
    blob = bytearray(pack(payload, "ans-columns"))
    body_at = len(blob) - len(_body(bytes(blob))) - len("-columns")
    section = blob.index(b"mlp_down", body_at) + len("mlp_down")
    count = int.from_bytes(blob[section:section + 4], "little")
    context = section + 4 + 4 * count
    ids = context + 1 + 4
    cols = int.from_bytes(blob[context + 1:context + 5], "little")
    records = ids + (cols * 3 + 7) // 8
    for _ in range(count - 1):  # past the other tensors' column lists
        c = int.from_bytes(blob[records:records + 4], "little")
        records += 4 + (c * 3 + 7) // 8
    pos = {"context": context, "bucket ids": ids, "record count": records,
           "record bucket": records + 1}[where]
    blob[pos] ^= {"context": 0x07, "bucket ids": 0xFF, "record count": 0x01,
                  "record bucket": 0x09}[where]
    with pytest.raises(BlobError) as e:
        unpack(bytes(blob), "m.golf")
    assert str(e.value).startswith("m.golf: ") and "\n" not in str(e.value)
