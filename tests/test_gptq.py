"""GPTQ, the clip grids, mixed precision, calibration sources and the byte-target search."""

import dataclasses

import pytest
import torch

from stages import artifacts
from stages.artifacts import to_bytes
from stages.compress import pack
from stages.config import ConfigError, QuantizeParams, build_section
from stages.data import load_train_tokens, load_val_tokens
from stages.model import build_model
from stages.quant import GRIDS, QuantizeError
from stages.quant.calibrate import collect_hessians, from_train_tokens, self_generated
from stages.quant.gptq import gptq
from stages.quant.groups import tensor_group
from stages.quant.rtn import rtn
from stages.quantize import dequantize, quantize, quantize_to_target

CALIB = dict(calib_batches=2, calib_batch_seqs=4, calib_seq_len=64, keep_float_max_numel=1024)


def _output_error(w, q, scale, x):
    return ((x @ w.T - x @ (q.float() * scale[:, None]).T) ** 2).mean().item()


def test_gptq_beats_rtn_on_layer_output_error():
    torch.manual_seed(0)
    # Correlated inputs (as real activations are): this is where error feedback pays off.
    x = torch.randn(2048, 64) @ torch.randn(64, 64) * 0.3 + torch.randn(2048, 1)
    w = torch.randn(32, 64)
    h = x.T @ x / x.size(0)
    scale = (w.abs().amax(dim=1) / 7).half().float()  # int4
    q_rtn, q_gptq = rtn(w, scale, 7), gptq(w, scale, 7, hessian=h, block=16)
    assert q_gptq.dtype == torch.int8 and q_gptq.abs().max() <= 7
    assert _output_error(w, q_gptq, scale, x) < 0.7 * _output_error(w, q_rtn, scale, x)


def test_gptq_handles_dead_columns_and_no_act_order():
    torch.manual_seed(0)
    x = torch.randn(512, 16)
    x[:, 3] = 0.0  # an input that never fires
    w = torch.randn(8, 16)
    scale = (w.abs().amax(dim=1) / 31).half().float()
    for act_order in (True, False):
        q = gptq(w, scale, 31, hessian=x.T @ x / 512, act_order=act_order)
        assert (q[:, 3] == 0).all()


def test_groups_and_mixed_precision(tiny_run):
    run, _ = tiny_run
    ckpt = artifacts.load(run / "final.safetensors")
    assert tensor_group("tok_emb.weight") == "embedding"
    assert tensor_group("blocks.1.attn.proj.weight.q") == "attn_out"
    assert tensor_group("blocks.0.mlp.fc.weight") == "mlp_up"
    assert tensor_group("skip_weights") == "other"
    params = QuantizeParams(bits=6, group_bits={"embedding": 8, "mlp_down": 4},
                            keep_float_max_numel=1024)
    q = quantize(ckpt, params, parents={})
    table = q.extra["tensors"]
    assert table["tok_emb.weight"]["bits"] == 8 and q.tensors["tok_emb.weight.q"].abs().max() > 31
    assert table["blocks.0.mlp.proj.weight"]["bits"] == 4
    assert q.tensors["blocks.0.mlp.proj.weight.q"].abs().max() <= 7
    assert table["blocks.0.mlp.fc.weight"]["bits"] == 6
    with pytest.raises(ConfigError, match="unknown group 'mlp'"):
        build_section("quantize", {"group_bits": {"mlp": 4}})


def test_sdclip_and_mse_grids():
    torch.manual_seed(0)
    w = torch.randn(16, 512)
    p = QuantizeParams(clip_sigmas=3.0, group_clip_sigmas={"attn_q": 5.0})
    assert torch.allclose(GRIDS["sdclip"](w, p, group="mlp_up"), 3.0 * w.std(dim=1, unbiased=False))
    assert torch.allclose(GRIDS["sdclip"](w, p, group="attn_q"), 5.0 * w.std(dim=1, unbiased=False))
    w[0, 0] = 50.0  # one outlier: the MSE grid must not let it set the whole row's scale
    clip = GRIDS["mse"](w, QuantizeParams(), qmax=7)
    assert clip[0] < 50.0
    h = torch.eye(512)
    h[:8, :8] *= 100.0  # important inputs: rows heavy there get wider clips
    w2 = torch.randn(4, 512)
    w2[0, :8] *= 10
    widened = GRIDS["sdclip-hessian"](w2, p, group="other", hessian=h)
    plain = GRIDS["sdclip"](w2, p, group="other")
    assert widened[0] / plain[0] > widened[1] / plain[1]
    with pytest.raises(QuantizeError, match="needs calibration"):
        GRIDS["sdclip-hessian"](w2, p, group="other", hessian=None)


def test_calibration_from_train_shards_only(data_dir, tiny_run):
    run, _ = tiny_run
    ckpt = artifacts.load(run / "final.safetensors")
    params = QuantizeParams(method="gptq", grid="sdclip", bits=6, **CALIB)
    with pytest.raises(TypeError, match="validation data is never used"):
        from_train_tokens(load_val_tokens(data_dir), params)
    calib = from_train_tokens(load_train_tokens(data_dir), params)
    model = build_model(ckpt.model_config, ckpt.tensors)
    hessians = collect_hessians(model, calib)
    assert hessians["tok_emb.weight"].shape == (64, 64)  # the head's input: final-norm output
    assert hessians["blocks.0.mlp.proj.weight"].shape == (128, 128)
    q = quantize(ckpt, params, parents={}, hessians=hessians, calibration=calib.provenance)
    assert q.provenance["calibration"]["source"] == "train_shards"
    assert q.provenance["calibration"]["shards"] == list(load_train_tokens(data_dir).shard_hashes)
    val_hashes = set(load_val_tokens(data_dir).shard_hashes)
    assert not val_hashes & set(q.provenance["calibration"]["shards"])
    # GPTQ's output is a valid artifact that dequantizes to the right shapes.
    restored = dequantize(q)
    assert all(restored[k].shape == v.shape for k, v in ckpt.tensors.items())


def test_self_generated_calibration_is_seeded(tiny_run):
    run, _ = tiny_run
    ckpt = artifacts.load(run / "final.safetensors")
    model = build_model(ckpt.model_config, ckpt.tensors)
    params = QuantizeParams(**{**CALIB, "calib_batches": 1, "calib_seq_len": 16})
    a, b = self_generated(model, params), self_generated(model, params)
    assert torch.equal(a.batches[0], b.batches[0]) and a.batches[0][0, 0].item() == 1
    assert a.provenance == {"source": "self", "seed": 0, "temperature": 0.8, "batches": 1,
                            "batch_seqs": 4, "seq_len": 16}


def test_target_bytes_search_lands_under_the_target(tiny_run):
    run, _ = tiny_run
    ckpt = artifacts.load(run / "final.safetensors")
    params = QuantizeParams(bits=8, grid="sdclip", clip_sigmas=4.0, keep_float_max_numel=1024)
    full = len(pack(to_bytes(quantize(ckpt, params, parents={})), "zstd", 3))
    target = int(full * 0.85)
    q, report = quantize_to_target(ckpt, params, target_bytes=target, code_bytes=0, codec="zstd",
                                   level=3, parents={})
    assert report["total_bytes"] <= target < full
    assert report["clip_multiplier"] > 1.0 == params.clip_multiplier
    assert q.params["quantize"]["clip_multiplier"] == report["clip_multiplier"]
    assert len(pack(to_bytes(q), "zstd", 3)) == report["total_bytes"]
    loose, report = quantize_to_target(ckpt, params, target_bytes=full * 2, code_bytes=0,
                                       codec="zstd", level=3, parents={})
    assert report["clip_multiplier"] == 1.0 and len(report["tries"]) == 1
    with pytest.raises(QuantizeError, match="cannot reach"):
        quantize_to_target(ckpt, dataclasses.replace(params, bits=8), target_bytes=1000,
                           code_bytes=0, codec="zstd", level=3, parents={})


def test_lqer_repairs_the_worst_matrices(tiny_run):
    run, _ = tiny_run
    ckpt = artifacts.load(run / "final.safetensors")
    params = QuantizeParams(bits=4, keep_float_max_numel=1024)
    plain = dequantize(quantize(ckpt, params, parents={}))
    q = quantize(ckpt, dataclasses.replace(params, lqer_rank=4, lqer_top=2), parents={})
    repaired = dequantize(q)
    fixed = [n for n, e in q.extra["tensors"].items() if "lqer" in e]
    assert len(fixed) == 2
    for name in fixed:
        assert q.tensors[f"{name}.lqer_a"].min() >= -2 and q.tensors[f"{name}.lqer_a"].max() <= 1
        assert q.tensors[f"{name}.lqer_b"].abs().max() <= 8
        before = (plain[name] - ckpt.tensors[name]).norm()
        after = (repaired[name] - ckpt.tensors[name]).norm()
        assert after < before, name
    untouched = next(n for n, e in q.extra["tensors"].items()
                     if e["scheme"] == "int_per_row" and "lqer" not in e)
    assert torch.equal(plain[untouched], repaired[untouched])
