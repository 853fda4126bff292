"""Calibration: train shards or the model's own text, never validation data; Hessians per layer."""

import shutil

import pytest
import torch

from stages.data.shards import ShardError, load_train_tokens, load_val_tokens
from stages.model.gpt import build_model
from stages.quant.calibrate import (
    calibrate,
    calibration_steps,
    collect_hessians,
    from_train_tokens,
    self_generated,
)
from stages.quant.format import dequantize
from stages.quant.params import QuantizeParams
from stages.quant.quantize import quantize

CALIB = dict(calib_batches=2, calib_batch_seqs=4, calib_seq_len=64, keep_float_max_numel=1024)


def test_calibration_from_train_shards_only(data_dir, tiny_checkpoint):
    ckpt = tiny_checkpoint
    params = QuantizeParams(method="gptq", grid="sdclip", bits=6, **CALIB)
    with pytest.raises(TypeError, match="validation data is never used"):
        from_train_tokens(load_val_tokens(data_dir), params)
    calib = from_train_tokens(load_train_tokens(data_dir), params)
    model = build_model(ckpt.model_config, ckpt.tensors)
    hessians = collect_hessians(model, calib)
    assert hessians["tok_emb.weight"].shape == (64, 64)  # the head's input: final-norm output
    assert hessians["blocks.0.mlp.proj.weight"].shape == (128, 128)
    assert all(not m._forward_hooks for m in model.modules())  # hooks removed
    q = quantize(ckpt, params, parents={}, hessians=hessians, calibration=calib.provenance)
    assert q.provenance["calibration"]["source"] == "train_shards"
    assert q.provenance["calibration"]["shards"] == list(load_train_tokens(data_dir).shard_hashes)
    val_hashes = set(load_val_tokens(data_dir).shard_hashes)
    assert not val_hashes & set(q.provenance["calibration"]["shards"])
    # GPTQ's output is a valid artifact that dequantizes to the right shapes.
    restored = dequantize(q)
    assert all(restored[k].shape == v.shape for k, v in ckpt.tensors.items())


def test_calibrate_refuses_files_and_validation_shards_posing_as_train(data_dir, tiny_checkpoint,
                                                                      tmp_path):
    params = QuantizeParams(method="gptq", **CALIB)
    with pytest.raises(ShardError, match="--calib takes a data directory"):
        calibrate(tiny_checkpoint, str(data_dir / "val_000000.bin"), params)
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    shutil.copy(copy / "val_000000.bin", copy / "train_000001.bin")
    with pytest.raises(ShardError, match="are validation documents"):
        calibrate(tiny_checkpoint, str(copy), params)
    # The same tokens under another header word: another file hash, the same documents (L2).
    raw = bytearray((copy / "val_000000.bin").read_bytes())
    raw[40] ^= 1  # an ignored header word
    (copy / "train_000001.bin").write_bytes(bytes(raw))
    with pytest.raises(ShardError, match="are validation documents"):
        calibrate(tiny_checkpoint, str(copy), params)
    seen = []
    hessians, provenance = calibrate(tiny_checkpoint, str(data_dir), params, seen.append)
    assert len(seen) == calibration_steps(str(data_dir), params) == 2
    assert provenance["source"] == "train_shards" and "blocks.1.attn.c_q.weight" in hessians
    assert provenance["documents"]["documents"] > 0  # what it read, by content


def test_self_generated_calibration_is_seeded(tiny_checkpoint):
    model = build_model(tiny_checkpoint.model_config, tiny_checkpoint.tensors)
    params = QuantizeParams(**{**CALIB, "calib_batches": 1, "calib_seq_len": 16})
    a, b = self_generated(model, params), self_generated(model, params)
    assert torch.equal(a.batches[0], b.batches[0]) and a.batches[0][0, 0].item() == 1  # BOS
    assert a.batches[0].shape == (4, 16)
    assert a.provenance == {"source": "self", "seed": 0, "temperature": 0.8, "batches": 1,
                            "batch_seqs": 4, "seq_len": 16}
    other = self_generated(model, QuantizeParams(**{**CALIB, "calib_batches": 1,
                                                    "calib_seq_len": 16, "calib_seed": 1}))
    assert not torch.equal(a.batches[0], other.batches[0])
