"""`golf quantize`: the error bound per tensor, the storage policy, mixed precision, the registries,
pruning, and quantizing a model with every feature on."""

import dataclasses
import typing

import pytest
import torch

from stages import artifacts
from stages.artifacts import Artifact
from stages.budget import BudgetError
from stages.codec.blob import packed_size
from stages.model.gpt import GPT, build_model
from stages.params import ConfigError, build, param
from stages.quant.calibrate import Calibration, collect_hessians
from stages.quant.format import dequantize, scheme_counts
from stages.quant.params import Grid, Method, QuantizeParams
from stages.quant.quantize import quantize, quantize_to_target
from stages.quant.registry import GRIDS, METHODS, QuantizeError
from stages.tensorfile import qmax_for
from tests.conftest import BASE, EVERY_FEATURE, randomise


@pytest.mark.parametrize("bits", [8, 6, 4])
def test_dequantize_error_is_bounded_per_tensor(tiny_checkpoint, bits):
    ckpt = tiny_checkpoint
    params = QuantizeParams(bits=bits, clip_percentile=100.0, keep_float_max_numel=1024)
    q = quantize(ckpt, params, parents={})
    restored = dequantize(q)
    assert restored.keys() == ckpt.tensors.keys()
    for name, w in ckpt.tensors.items():
        entry = q.extra["tensors"][name]
        err = (restored[name] - w).abs()
        if entry["scheme"] == "int_per_row":
            codes = q.tensors[f"{name}.q"]
            assert codes.dtype == torch.int8 and codes.abs().max() <= qmax_for(bits)
            scale = q.tensors[f"{name}.scale"].float()
            # With the clip at the row maximum nothing is clipped: half a step per entry at most
            # (plus the fp16 rounding of the scale, which can move the range edge by one step).
            bound = scale[:, None] * 0.5 + w.reshape(w.shape[0], -1).abs() * 1e-3
            assert (err.reshape(w.shape[0], -1) <= bound).all(), name
        elif entry["scheme"] == "float32":
            assert torch.equal(restored[name], w)
        else:
            assert entry["scheme"] == "float16" and err.max() <= w.abs().max() * 1e-3


def test_policy_small_tensors_stay_float_and_lineage_is_kept(tiny_checkpoint):
    q = quantize(tiny_checkpoint, QuantizeParams(keep_float_max_numel=4096),
                 parents={"checkpoint": "h"})
    table = q.extra["tensors"]
    assert table["blocks.0.attn_scale"]["scheme"] == "float32"  # a control
    assert table["blocks.0.mlp.fc.weight"]["scheme"] == "int_per_row"  # 128 x 64 = 8192
    assert table["blocks.0.attn.c_k.weight"]["scheme"] == "float16"  # 32 x 64 = 2048
    assert q.parents == {"checkpoint": "h"} and q.provenance["quantizer"] == "rtn/percentile"
    assert sum(scheme_counts(q).values()) == len(tiny_checkpoint.tensors)
    with pytest.raises(QuantizeError, match="dequantize takes a quantized artifact"):
        dequantize(tiny_checkpoint)


def test_groups_get_their_own_bits(tiny_checkpoint):
    params = QuantizeParams(bits=6, group_bits={"embedding": 8, "mlp_down": 4},
                            keep_float_max_numel=1024)
    q = quantize(tiny_checkpoint, params, parents={})
    table = q.extra["tensors"]
    assert table["tok_emb.weight"]["bits"] == 8 and q.tensors["tok_emb.weight.q"].abs().max() > 31
    assert table["blocks.0.mlp.proj.weight"]["bits"] == 4
    assert q.tensors["blocks.0.mlp.proj.weight.q"].abs().max() <= 7
    assert table["blocks.0.mlp.fc.weight"]["bits"] == 6
    with pytest.raises(ConfigError, match="quantize.group_bits key must be one of embedding, "):
        build(QuantizeParams, {"group_bits": {"mlp": 4}})


def test_registries_are_the_names_the_params_accept(tiny_checkpoint):
    import stages.quant.gptq  # noqa: F401  (quantize imports it only when a run asks for GPTQ)

    assert set(METHODS) == set(typing.get_args(Method))
    assert set(GRIDS) == set(typing.get_args(Grid))
    with pytest.raises(ConfigError, match="quantize.method must be one of rtn, gptq; got 'awq'"):
        QuantizeParams(method="awq")
    with pytest.raises(QuantizeError, match="needs calibration data"):
        quantize(tiny_checkpoint, QuantizeParams(method="gptq"), parents={})
    assert QuantizeParams(grid="sdclip-hessian").needs_calibration()
    assert not QuantizeParams(grid="sdclip").needs_calibration()


@dataclasses.dataclass(frozen=True)
class _WithFloor(QuantizeParams):
    """A plugin's params: the names the schema accepts, plus its own method."""

    method: typing.Literal["rtn", "gptq", "floor"] = param("rtn", "how codes are rounded")


def test_a_new_method_plugs_in_without_touching_callers(tiny_checkpoint, monkeypatch):
    monkeypatch.setitem(METHODS, "floor", lambda w, scale, qmax, **_: torch.clamp(
        torch.floor(w / scale[:, None]), -qmax, qmax).to(torch.int8))
    q = quantize(tiny_checkpoint, _WithFloor(method="floor", clip_percentile=100.0,
                                         keep_float_max_numel=0), parents={})
    assert q.params["quantize"]["method"] == "floor"
    w = tiny_checkpoint.tensors["blocks.0.mlp.fc.weight"]
    step = q.tensors["blocks.0.mlp.fc.weight.scale"].float().mean()
    assert (dequantize(q)["blocks.0.mlp.fc.weight"] - w).mean() < -0.4 * step  # floor: -1/2 step
    monkeypatch.delitem(METHODS, "floor")
    with pytest.raises(QuantizeError, match="quantize.method 'floor' is not available"):
        quantize(tiny_checkpoint, _WithFloor(method="floor"), parents={})


def test_quantized_artifact_round_trips_through_disk(tmp_path, quantized_path):
    q = artifacts.load(quantized_path, expect="quantized")
    again = tmp_path / "again.safetensors"
    artifacts.save(q, again)
    assert again.read_bytes() == quantized_path.read_bytes()
    with pytest.raises(artifacts.ArtifactError, match="expected a checkpoint artifact, got quan"):
        artifacts.load(quantized_path, expect="checkpoint")
    with pytest.raises(QuantizeError, match="quantize takes a checkpoint"):
        quantize(q, QuantizeParams(), parents={})


def test_tensors_the_model_does_not_have_are_refused():
    ckpt = Artifact("checkpoint", {"blocks.0.attn.c_q.weight": torch.ones(64, 64),
                                   "lm_head.weight": torch.ones(4, 4)}, BASE)
    with pytest.raises(QuantizeError, match="lm_head.weight"):
        quantize(ckpt, QuantizeParams(), parents={})


def test_magnitude_pruning_zeroes_the_smallest_weights(tiny_checkpoint):
    q = quantize(tiny_checkpoint, QuantizeParams(prune_frac=0.3, keep_float_max_numel=1024),
                 parents={})
    codes = q.tensors["blocks.0.mlp.fc.weight.q"]
    assert (codes == 0).sum() >= int(0.3 * codes.numel())


@pytest.mark.parametrize("method", ["rtn", "gptq"])
def test_quantize_with_every_feature_on(method):
    model = randomise(GPT(EVERY_FEATURE), std=0.05)
    ckpt = Artifact("checkpoint", {k: v.clone() for k, v in model.state_dict().items()},
                    EVERY_FEATURE)
    params = QuantizeParams(method=method, bits=8, keep_float_max_numel=256)
    hessians = None
    if method == "gptq":
        calib = Calibration([torch.randint(0, BASE.vocab_size, (2, 24)) for _ in range(2)])
        hessians = collect_hessians(build_model(EVERY_FEATURE, ckpt.tensors), calib)
        tables = {"bigram.embed.weight", "ve.embed.weight"}  # no input activations: identity
        assert tables | {"blocks.1.attn.c_q.weight", "blocks.0.mlp.gate.weight"} <= set(hessians)
        assert torch.equal(hessians["ve.embed.weight"], torch.eye(EVERY_FEATURE.ve_dim))
    q = quantize(ckpt, params, parents={}, hessians=hessians)
    table = q.extra["tensors"]
    assert table["bigram.embed.weight"]["scheme"] == "int_per_row"
    assert table["parallel_post_lambdas"]["scheme"] == "float32"
    assert table["bigram.scale"]["scheme"] == "float32"
    restored = build_model(EVERY_FEATURE, dequantize(q))
    idx = torch.randint(2, BASE.vocab_size, (1, 16))
    assert torch.allclose(restored(idx), model(idx), atol=0.05)


def test_target_bytes_search_lands_under_the_target(tiny_checkpoint):
    def measure(artifact):
        return packed_size(artifact, "zstd", 3)

    params = QuantizeParams(bits=8, grid="sdclip", clip_sigmas=4.0, keep_float_max_numel=1024)
    full = measure(quantize(tiny_checkpoint, params, parents={}))
    target = int(full * 0.85)
    q, report = quantize_to_target(tiny_checkpoint, params, target_bytes=target, measure=measure,
                                   parents={})
    assert report["total_bytes"] <= target < full
    assert report["clip_multiplier"] > 1.0 == params.clip_multiplier
    assert q.params["quantize"]["clip_multiplier"] == report["clip_multiplier"]
    assert measure(q) == report["total_bytes"]
    _, loose = quantize_to_target(tiny_checkpoint, params, target_bytes=full * 2, measure=measure,
                                  parents={})
    assert loose["clip_multiplier"] == 1.0 and len(loose["tries"]) == 1
    with pytest.raises(BudgetError, match="cannot reach 1,000 bytes"):
        quantize_to_target(tiny_checkpoint, params, target_bytes=1000, measure=measure, parents={})
