"""Model features of the later record stacks: BigramHash, value embeddings, depth recurrence,
parallel residuals, NTK RoPE, the sparse attention gate, and canonical names with all of them on."""

import dataclasses

import pytest
import torch

from stages.artifacts import Artifact
from stages.config import ConfigError, ModelConfig, QuantizeParams, build_section
from stages.model import (BOS_TOKEN_ID, CONTROL_NAMES, GPT, CausalSelfAttention, Rotary,
                          bigram_buckets, build_model, num_skip_slots, virtual_layers)
from stages.optim import split_parameters
from stages.quant.calibrate import Calibration, collect_hessians
from stages.quantize import dequantize, quantize
from tests.conftest import TINY_MODEL, train_briefly

BASE = ModelConfig(**{**TINY_MODEL, "num_layers": 4})
# Every switch on, sized so the tiny model still has each kind of tensor (layout 0 1 2 1 2 3).
EVERYTHING = dataclasses.replace(
    BASE, activation="leaky_relu2", rope_dims=8, ln_scale=True, xsa_last_n=4, skip_gates=True,
    smear_gate=True, sparse_attn_gate=True, ortho_init=True, bigram_buckets=64, bigram_dim=16,
    ve_layers=[2, 3], ve_dim=16, loop_start=1, loop_end=2, num_loops=1,
    parallel_residual="two_lane", parallel_start=3, rope_ntk_train_len=16)


def _randomise(model, std=0.1, seed=1):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=std)
    return model


def _same_weights(cfg, source):
    """A model of `cfg` holding `source`'s tensors (skip slots trimmed to `cfg`'s count)."""
    target = GPT(cfg)
    state = {k: v[:target.state_dict()[k].size(0)] if k.startswith("skip_") else v
             for k, v in source.state_dict().items() if k in target.state_dict()}
    target.load_state_dict(state, strict=True)
    return target


# --- BigramHash --------------------------------------------------------------------------------

def test_bigram_buckets_hash_pairs_and_never_look_across_bos():
    idx = torch.tensor([[5, 7, BOS_TOKEN_ID, 9, 11]])
    b = bigram_buckets(idx, 64)
    assert b[0, 0] == 63 and b[0, 2] == 63  # position 0 and the BOS have no previous token
    assert b[0, 1] == ((36313 * 7) ^ (27191 * 5)) % 63
    assert b[0, 3] == ((36313 * 9) ^ (27191 * BOS_TOKEN_ID)) % 63  # a document's first token
    assert int(b.max()) < 64


def test_embedding_input_never_sees_the_previous_document():
    model = _randomise(GPT(EVERYTHING))  # bigram table and projection non-zero, smear on
    idx = torch.tensor([[5, 7, 8, BOS_TOKEN_ID, 9, 11]])
    other = idx.clone()
    other[0, :3] = torch.tensor([20, 30, 40])  # a different previous document
    a, b = model.embed(idx), model.embed(other)
    assert torch.equal(a[0, 3:], b[0, 3:])
    assert not torch.equal(a[0, :3], b[0, :3])


# --- Zero-initialised additions start as the identity --------------------------------------------

@pytest.mark.parametrize("change", [dict(bigram_buckets=32, bigram_dim=8),
                                    dict(ve_layers=[1, 3], ve_dim=8)])
def test_zero_initialised_embeddings_start_as_the_identity_then_matter(change):
    torch.manual_seed(0)
    plain = _randomise(GPT(BASE))
    extended = GPT(dataclasses.replace(BASE, **change))
    extended.load_state_dict(plain.state_dict(), strict=False)
    idx = torch.randint(2, BASE.vocab_size, (2, 16))
    assert torch.allclose(plain(idx), extended(idx), atol=1e-6)
    added = extended.get_submodule("bigram" if "bigram_buckets" in change else "ve")
    with torch.no_grad():
        added.proj.weight.normal_()
        added.embed.weight.normal_()
    assert not torch.allclose(plain(idx), extended(idx), atol=1e-3)


def test_value_embeddings_are_shared_and_weighted_per_layer():
    cfg = dataclasses.replace(BASE, ve_layers=[1, 3], ve_dim=8)
    model = GPT(cfg)
    names = set(model.state_dict())
    assert {n for n in names if "ve_lambda" in n} == {"blocks.1.attn.ve_lambda",
                                                      "blocks.3.attn.ve_lambda"}
    assert model.ve.embed.weight.shape == (BASE.vocab_size, 8)
    assert model.ve.proj.weight.shape == (BASE.num_kv_heads * BASE.model_dim // BASE.num_heads, 8)
    assert model.ve.scale.item() == pytest.approx(0.1)
    assert model.blocks[1].attn.ve_lambda.item() == 1
    _randomise(model)
    idx = torch.randint(2, BASE.vocab_size, (1, 12))
    with torch.no_grad():  # zero weight in every chosen layer: the embedding no longer matters
        for i in cfg.ve_layers:
            model.blocks[i].attn.ve_lambda.zero_()
    without = _same_weights(BASE, model)
    assert torch.allclose(model(idx), without(idx), atol=1e-5)


# --- Depth recurrence ---------------------------------------------------------------------------

def test_virtual_layouts_of_the_records():
    best = ModelConfig(num_layers=11, loop_start=3, loop_end=5, num_loops=2)
    layout = virtual_layers(best)
    assert layout == (0, 1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10)
    assert layout[:8] == (0, 1, 2, 3, 4, 5, 3, 4) and num_skip_slots(layout) == 8
    sp8k = virtual_layers(dataclasses.replace(best, loop_start=4, loop_end=5))
    assert sp8k[:7] == (0, 1, 2, 3, 4, 5, 4) and sp8k[7:] == (5, 4, 5, 6, 7, 8, 9, 10)
    assert virtual_layers(best, looping=False) == tuple(range(11))


def test_looping_shares_weights_and_switches_at_run_time():
    cfg = dataclasses.replace(BASE, loop_start=1, loop_end=2, num_loops=2, skip_gates=True)
    model = _randomise(GPT(cfg))
    assert model.looping and model.layout == (0, 1, 2, 1, 2, 1, 2, 3)  # a new model loops
    assert model.skip_weights.shape[0] == 4 and len(model.blocks) == 4
    idx = torch.randint(2, BASE.vocab_size, (1, 12))
    looped = model(idx)
    model.set_looping(False)
    plain = _same_weights(dataclasses.replace(cfg, num_loops=0), model)
    assert torch.equal(model(idx), plain(idx))  # the plain layout is the unlooped model
    assert not torch.allclose(model(idx), looped, atol=1e-3)
    model.set_looping(True)
    assert torch.equal(model(idx), looped)


# --- Parallel residuals -------------------------------------------------------------------------

def test_gptj_parallel_blocks_read_one_input():
    cfg = dataclasses.replace(BASE, parallel_residual="gptj", parallel_start=2)
    model = _randomise(GPT(cfg))
    assert model.parallel_from == 2
    block, x, x0 = model.blocks[2], torch.randn(1, 6, 64), torch.randn(1, 6, 64)
    mixed = block.mix(x, x0)
    expected = mixed + block.attend(mixed, None) + block.feed_forward(mixed)
    assert torch.allclose(block.parallel(x, x0), expected, atol=1e-6)
    sequential = _same_weights(BASE, model)
    idx = torch.randint(2, BASE.vocab_size, (1, 10))
    assert not torch.allclose(model(idx), sequential(idx), atol=1e-3)


def test_two_lanes_with_unit_routing_are_gptj():
    """Lanes that keep themselves and take both outputs (and an identity resid mix) never differ,
    so the two-lane model reduces to the GPT-J one: a check of the lane bookkeeping and the mean."""
    two = GPT(dataclasses.replace(BASE, parallel_residual="two_lane", parallel_start=2))
    post, resid = two.parallel_post_lambdas, two.parallel_resid_lambdas
    assert post.shape == (4, 2, 2) and resid.shape == (4, 2)
    assert torch.all(resid == 1.1) and torch.all(post == 1)
    _randomise(two)
    with torch.no_grad():
        two.parallel_post_lambdas.fill_(1.0)
        two.parallel_resid_lambdas.fill_(1.0)
        two.skip_weights.zero_()  # decoder skips go to lane0 only, which would split the lanes
        for block in two.blocks[2:]:
            block.resid_mix.copy_(torch.stack([torch.ones(64), torch.zeros(64)]))
    gptj = _same_weights(dataclasses.replace(BASE, parallel_residual="gptj", parallel_start=2), two)
    idx = torch.randint(2, BASE.vocab_size, (1, 10))
    assert torch.allclose(two(idx), gptj(idx), atol=1e-5)
    with torch.no_grad():  # asymmetric routing separates the lanes
        two.parallel_post_lambdas[:, 1, 0] = 0.0
    assert not torch.allclose(two(idx), gptj(idx), atol=1e-3)


# --- NTK RoPE and the sparse attention gate -----------------------------------------------------

def test_ntk_rope_rescales_the_base_only_beyond_the_training_length():
    x = torch.randn(1, 24, 2, 16)
    plain, ntk = Rotary(8, 10000.0), Rotary(8, 10000.0, ntk_train_len=16)
    assert torch.equal(ntk(x[:, :16]), plain(x[:, :16]))
    stretched = Rotary(8, 10000.0 * (24 / 16) ** (8 / 6))
    assert torch.allclose(ntk(x), stretched(x), atol=1e-6)
    assert not torch.allclose(ntk(x), plain(x), atol=1e-3)


def test_sparse_attention_gate_halves_at_init_and_reads_twelve_channels():
    torch.manual_seed(0)
    plain = CausalSelfAttention(BASE)
    gated = CausalSelfAttention(dataclasses.replace(BASE, sparse_attn_gate=True))
    _randomise(plain)
    gated.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(2, 8, 64)
    assert torch.allclose(gated(x), 0.5 * plain(x), atol=1e-6)  # sigmoid(0) = 0.5
    with torch.no_grad():
        gated.attn_gate_w.normal_()
    y = gated(x)
    x2 = x.clone()
    x2[..., 12:] += 1.0  # channels beyond the window move the attention, not the gate
    g = torch.sigmoid(0.5 * x[..., :12] @ gated.attn_gate_w.T)
    assert torch.allclose(gated._gate(x2)[..., 0], g)
    assert not torch.allclose(y, 0.5 * plain(x), atol=1e-4)


def test_record_feature_values_are_checked():
    cases = [({"attn_out_gate": True, "sparse_attn_gate": True}, "exclusive"),
             ({"bigram_buckets": 1}, "model.bigram_buckets"),
             ({"ve_layers": [9]}, "model.ve_layers"),
             ({"ve_layers": [1, 1]}, "model.ve_layers"),
             ({"loop_start": 5, "loop_end": 4, "num_loops": 1}, "model.loop_start/loop_end"),
             ({"num_loops": -1}, "model.num_loops"),
             ({"parallel_residual": "lanes"}, "model.parallel_residual must be one of"),
             ({"parallel_start": 9}, "model.parallel_start"),
             ({"rope_ntk_train_len": 64, "rope_dims": 2}, "rotated dims")]
    for values, message in cases:
        with pytest.raises(ConfigError, match=message):
            build_section("model", values)


# --- All together: canonical names, routing, causality, quantization ----------------------------

def test_canonical_names_with_every_feature_on():
    model = GPT(EVERYTHING)
    per_block = ["attn.c_q.weight", "attn.c_k.weight", "attn.c_v.weight", "attn.proj.weight",
                 "attn.q_gain", "attn.attn_gate_w", "mlp.fc.weight", "mlp.proj.weight",
                 "attn_scale", "mlp_scale", "resid_mix"]
    expected = {"tok_emb.weight", "skip_weights", "skip_gates", "smear_w", "smear_lambda",
                "parallel_post_lambdas", "parallel_resid_lambdas",
                "bigram.embed.weight", "bigram.proj.weight", "bigram.scale",
                "ve.embed.weight", "ve.proj.weight", "ve.scale",
                "blocks.2.attn.ve_lambda", "blocks.3.attn.ve_lambda"}
    expected |= {f"blocks.{i}.{n}" for i in range(4) for n in per_block}
    state = model.state_dict()
    assert set(state) == expected  # one entry per physical tensor: no loop/lane copies, no buffers
    assert len(state) == len(list(model.parameters()))
    model.set_looping(False)
    model.set_qat(6)
    assert set(model.state_dict()) == expected
    assert model.skip_weights.shape == (3, 64) and model.layout == (0, 1, 2, 3)


def test_control_tensors_route_to_scalar_adam_and_stay_fp32():
    model = GPT(EVERYTHING)
    scalar = {id(p) for p in split_parameters(model)["scalar"]}
    names = dict(model.named_parameters())
    for name in ("bigram.scale", "ve.scale", "blocks.2.attn.ve_lambda", "parallel_post_lambdas",
                 "parallel_resid_lambdas", "blocks.0.attn.attn_gate_w"):
        assert id(names[name]) in scalar, name
        assert any(c in name for c in CONTROL_NAMES), name  # what quantize keys its fp32 rule on


def test_everything_on_is_causal_and_learns():
    torch.manual_seed(0)
    model = _randomise(GPT(EVERYTHING))
    idx = torch.randint(2, BASE.vocab_size, (1, 24))  # longer than rope_ntk_train_len
    changed = idx.clone()
    changed[0, 12:] = (changed[0, 12:] + 7) % BASE.vocab_size
    assert torch.allclose(model(idx)[0, :12], model(changed)[0, :12], atol=1e-5)

    torch.manual_seed(0)
    model = GPT(EVERYTHING)
    first, last = train_briefly(model, torch.randint(0, BASE.vocab_size, (2, 17)), steps=12)
    assert last < 0.7 * first


@pytest.mark.parametrize("method", ["rtn", "gptq"])
def test_quantize_with_every_feature_on(method):
    torch.manual_seed(0)
    model = _randomise(GPT(EVERYTHING), std=0.05)
    ckpt = Artifact("checkpoint", {k: v.clone() for k, v in model.state_dict().items()}, EVERYTHING)
    params = QuantizeParams(method=method, bits=8, keep_float_max_numel=256)
    hessians = None
    if method == "gptq":
        calib = Calibration([torch.randint(0, BASE.vocab_size, (2, 24)) for _ in range(2)])
        hessians = collect_hessians(build_model(EVERYTHING, ckpt.tensors), calib)
        tables = {"bigram.embed.weight", "ve.embed.weight"}
        assert tables | {"blocks.1.attn.c_q.weight"} <= set(hessians)
    q = quantize(ckpt, params, parents={}, hessians=hessians)
    table = q.extra["tensors"]
    assert table["bigram.embed.weight"]["scheme"] == "int_per_row"
    assert table["parallel_post_lambdas"]["scheme"] == "float32"
    assert table["bigram.scale"]["scheme"] == "float32"
    restored = build_model(EVERYTHING, dequantize(q))
    idx = torch.randint(2, BASE.vocab_size, (1, 16))
    assert torch.allclose(restored(idx), model(idx), atol=0.05)


def test_checkpoint_with_every_feature_round_trips_through_disk(tmp_path):
    from stages import artifacts

    model = _randomise(GPT(EVERYTHING))
    ckpt = Artifact("checkpoint", dict(model.state_dict()), EVERYTHING)
    artifacts.save(ckpt, tmp_path / "c.safetensors")
    loaded = artifacts.load(tmp_path / "c.safetensors", expect="checkpoint")
    assert loaded.model_config == EVERYTHING and hash(loaded.model_config) == hash(EVERYTHING)
    idx = torch.randint(2, BASE.vocab_size, (1, 12))
    assert torch.equal(build_model(loaded.model_config, loaded.tensors)(idx), model(idx))
