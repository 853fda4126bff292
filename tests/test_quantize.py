import pytest
import torch

from stages import artifacts
from stages.config import ModelConfig, QuantizeParams
from stages.model import CONTROL_NAMES, GPT
from stages.quant import GRIDS, METHODS, QuantizeError
from stages.quant.groups import GROUPS, tensor_group
from stages.quantize import dequantize, quantize


def _checkpoint(tiny_run):
    run, _ = tiny_run
    return artifacts.load(run / "final.safetensors", expect="checkpoint")


@pytest.mark.parametrize("bits", [8, 6, 4])
def test_dequantize_error_is_bounded_per_tensor(tiny_run, bits):
    ckpt = _checkpoint(tiny_run)
    params = QuantizeParams(bits=bits, clip_percentile=100.0, keep_float_max_numel=1024)
    q = quantize(ckpt, params, parents={})
    restored = dequantize(q)
    assert restored.keys() == ckpt.tensors.keys()
    qmax = 2 ** (bits - 1) - 1
    for name, w in ckpt.tensors.items():
        entry = q.extra["tensors"][name]
        err = (restored[name] - w).abs()
        if entry["scheme"] == "int_per_row":
            codes = q.tensors[f"{name}.q"]
            assert codes.dtype == torch.int8 and codes.abs().max() <= qmax
            scale = q.tensors[f"{name}.scale"].float()
            # With the clip at the row maximum nothing is clipped: half a step per entry at most
            # (plus the fp16 rounding of the scale, which can move the range edge by one step).
            bound = scale[:, None] * 0.5 + w.reshape(w.shape[0], -1).abs() * 1e-3
            assert (err.reshape(w.shape[0], -1) <= bound).all(), name
        elif entry["scheme"] == "float32":
            assert torch.equal(restored[name], w)
        else:
            assert entry["scheme"] == "float16" and err.max() <= w.abs().max() * 1e-3


def test_policy_small_and_control_tensors_stay_float(tiny_run):
    ckpt = _checkpoint(tiny_run)
    q = quantize(ckpt, QuantizeParams(keep_float_max_numel=4096), parents={"checkpoint": "h"})
    table = q.extra["tensors"]
    assert table["blocks.0.attn_scale"]["scheme"] == "float32"
    assert table["blocks.0.mlp.fc.weight"]["scheme"] == "int_per_row"  # 128 x 64 = 8192
    assert table["blocks.0.attn.c_k.weight"]["scheme"] == "float16"  # 32 x 64 = 2048
    assert q.parents == {"checkpoint": "h"} and q.provenance["quantizer"] == "rtn/percentile"


def test_percentile_clip_clips_outliers():
    w = torch.ones(2, 1000)
    w[0, 0] = 100.0
    clip = GRIDS["percentile"](w, QuantizeParams(clip_percentile=99.0))
    assert clip[0] < 2 and clip[1] == 1.0


def test_registries_are_checked(tiny_run):
    assert {"rtn", "gptq"} <= set(METHODS)
    assert {"percentile", "mse", "sdclip", "sdclip-hessian"} <= set(GRIDS)
    ckpt = _checkpoint(tiny_run)
    with pytest.raises(QuantizeError, match="quantize.method 'awq' is not available"):
        quantize(ckpt, QuantizeParams(method="awq"), parents={})
    with pytest.raises(QuantizeError, match="quantize.grid 'minmax' is not available"):
        quantize(ckpt, QuantizeParams(grid="minmax"), parents={})
    with pytest.raises(QuantizeError, match="needs calibration data"):
        quantize(ckpt, QuantizeParams(method="gptq"), parents={})


def test_a_new_method_plugs_in_without_touching_callers(tiny_run):
    METHODS["floor"] = lambda w, scale, qmax, **_: torch.clamp(
        torch.floor(w / scale[:, None]), -qmax, qmax).to(torch.int8)
    try:
        q = quantize(_checkpoint(tiny_run), QuantizeParams(method="floor", keep_float_max_numel=0),
                     parents={})
        assert q.params["quantize"]["method"] == "floor"
    finally:
        del METHODS["floor"]


def test_quantized_artifact_round_trips_through_disk(tmp_path, quantized_path):
    q = artifacts.load(quantized_path, expect="quantized")
    again = tmp_path / "again.safetensors"
    artifacts.save(q, again)
    assert again.read_bytes() == quantized_path.read_bytes()
    with pytest.raises(artifacts.ArtifactError, match="expected a checkpoint artifact, got quantized"):
        artifacts.load(quantized_path, expect="checkpoint")


def test_magnitude_pruning_zeroes_the_smallest_weights(tiny_run):
    ckpt = _checkpoint(tiny_run)
    q = quantize(ckpt, QuantizeParams(prune_frac=0.3, keep_float_max_numel=1024), parents={})
    codes = q.tensors["blocks.0.mlp.fc.weight.q"]
    assert (codes == 0).sum() >= int(0.3 * codes.numel())


def test_tensor_groups_by_canonical_name():
    names = {"tok_emb.weight": "embedding", "blocks.0.attn.c_q.weight.q": "attn_q",
             "blocks.1.attn.c_k.weight": "attn_k", "blocks.10.attn.c_v.weight.scale": "attn_v",
             "blocks.2.attn.proj.weight.q": "attn_out", "blocks.2.mlp.fc.weight.q": "mlp_up",
             "blocks.2.mlp.proj.weight.q": "mlp_down", "skip_weights": "other",
             "blocks.0.attn.q_gain": "other", "proj.weight": "other"}
    assert {n: tensor_group(n) for n in names} == names
    assert set(names.values()) == set(GROUPS)


def test_every_weight_matrix_of_the_model_has_a_group():
    cfg = ModelConfig(vocab_size=64, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1)
    matrices = [n for n, t in GPT(cfg).state_dict().items()
                if t.ndim == 2 and not any(c in n for c in CONTROL_NAMES)]
    assert len(matrices) == 1 + 2 * 6 and all(tensor_group(n) != "other" for n in matrices)
