"""The GPT as a whole: the baseline by default, every feature optional, canonical tensor names,
causal with everything on, and a checkpoint that round-trips through disk."""

import dataclasses
import math

import pytest
import torch

from stages import artifacts
from stages.artifacts import Artifact
from stages.model.config import ModelConfig
from stages.model.gpt import GPT, build_model, count_parameters
from tests.conftest import BASE, EVERY_FEATURE, TINY_MODEL, randomise, train_briefly

# Parameters that exist only when their feature is on (None otherwise), per model and per block.
OPTIONAL = ("skip_gates", "smear_w", "smear_lambda", "parallel_post_lambdas",
            "parallel_resid_lambdas", "bigram", "ve")
OPTIONAL_IN_BLOCK = ("attn.attn_gate_w", "attn.ve_lambda", "mlp.gate")


def _attr(module, dotted):
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


def test_initial_loss_is_uniform_and_shapes():
    torch.manual_seed(0)
    cfg = ModelConfig(**TINY_MODEL)
    model = GPT(cfg)
    idx = torch.randint(0, cfg.vocab_size, (2, 16))
    logits = model(idx)
    assert logits.shape == (2, 16, cfg.vocab_size) and logits.dtype == torch.float32
    # Tiny embeddings and zero-initialised output projections: the first prediction is ~uniform.
    targets = torch.randint(0, cfg.vocab_size, (2, 16))
    assert abs(model.loss(idx, targets).item() - math.log(cfg.vocab_size)) < 0.05
    assert logits.abs().max() <= cfg.logit_softcap


def test_optional_parameters_are_none_when_their_feature_is_off():
    plain, full = GPT(BASE), GPT(EVERY_FEATURE)
    for name in OPTIONAL:
        assert getattr(plain, name) is None, name
        assert getattr(full, name) is not None, name
    for i in range(BASE.num_layers):
        for name in OPTIONAL_IN_BLOCK:
            assert _attr(plain.blocks[i], name) is None, name
            expected = name != "attn.ve_lambda" or i in EVERY_FEATURE.ve_layers
            assert (_attr(full.blocks[i], name) is not None) == expected, (i, name)
    assert all(not n.startswith(("bigram", "ve.")) for n, _ in plain.named_parameters())


def test_parameter_counts_of_the_features():
    base = count_parameters(BASE)
    d, hidden, layers, heads = BASE.model_dim, BASE.mlp_mult * BASE.model_dim, 4, BASE.num_heads
    assert count_parameters(dataclasses.replace(BASE, activation="swiglu")) == \
        base + layers * d * hidden
    for gate in ("out", "sparse"):
        assert count_parameters(dataclasses.replace(BASE, attn_gate=gate)) == \
            base + layers * heads * 12
    assert count_parameters(dataclasses.replace(BASE, smear_gate=True)) == base + 12 + 1
    assert count_parameters(dataclasses.replace(BASE, skip_gates=True)) == base + 2 * d
    for flag in ("ln_scale", "ortho_init"):
        assert count_parameters(dataclasses.replace(BASE, **{flag: True})) == base
    assert count_parameters(dataclasses.replace(BASE, xsa_last_n=4, rope_dims=4)) == base


@pytest.mark.parametrize("change", [dict(smear_gate=True), dict(attn_gate="out"),
                                    dict(bigram_buckets=32, bigram_dim=8)],
                         ids=["smear", "out_gate", "bigram"])
def test_zero_initialised_additions_start_as_the_identity(change):
    """Value embeddings are not among them: as in the records, their table and projection both
    start non-zero (test_features)."""
    torch.manual_seed(0)
    plain = randomise(GPT(BASE))
    extended = GPT(dataclasses.replace(BASE, **change))
    extended.load_state_dict(plain.state_dict(), strict=False)
    idx = torch.randint(2, BASE.vocab_size, (2, 16))
    assert torch.allclose(plain(idx), extended(idx), atol=1e-6)


def test_ln_scale_orthogonal_init_and_xsa_layers():
    model = GPT(dataclasses.replace(EVERY_FEATURE, xsa_last_n=2))
    assert [b.norm_scale for b in model.blocks] == pytest.approx([1.0, 2**-0.5, 3**-0.5, 0.5])
    w = model.blocks[0].attn.c_q.weight
    assert torch.allclose(w @ w.T, torch.eye(w.size(0)), atol=1e-5)
    assert model.blocks[0].attn.proj.weight.abs().sum() == 0  # outputs stay zero-init
    assert model.blocks[0].mlp.proj.weight.abs().sum() == 0
    assert [b.attn.xsa for b in model.blocks] == [False, False, True, True]


@pytest.mark.parametrize("looping", [True, False], ids=["looped", "plain"])
def test_every_feature_on_is_causal(looping):
    """Changing tokens from position 12 on leaves every earlier logit as it was, with every switch
    on (BigramHash, SmearGate, value embeddings, gates, loops, two lanes, NTK RoPE beyond 16)."""
    model = randomise(GPT(EVERY_FEATURE))
    model.set_looping(looping)
    idx = torch.randint(2, BASE.vocab_size, (1, 24), generator=torch.Generator().manual_seed(0))
    changed = idx.clone()
    changed[0, 12:] = (changed[0, 12:] + 7) % BASE.vocab_size
    a, b = model(idx), model(changed)
    assert torch.allclose(a[0, :12], b[0, :12], atol=1e-5)
    assert not torch.allclose(a[0, 12:], b[0, 12:], atol=1e-3)


def test_every_feature_on_learns():
    torch.manual_seed(0)
    model = GPT(EVERY_FEATURE)
    first, last = train_briefly(model, torch.randint(0, BASE.vocab_size, (2, 17)), steps=12)
    assert last < 0.7 * first


def test_canonical_names_with_every_feature_on():
    model = GPT(EVERY_FEATURE)
    per_block = ["attn.c_q.weight", "attn.c_k.weight", "attn.c_v.weight", "attn.proj.weight",
                 "attn.q_gain", "attn.attn_gate_w", "mlp.fc.weight", "mlp.gate.weight",
                 "mlp.proj.weight", "attn_scale", "mlp_scale", "resid_mix"]
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
    assert model.skip_weights.shape == (3, 64) and model.plan.layers == (0, 1, 2, 3)


def test_checkpoint_with_every_feature_round_trips_through_disk(tmp_path):
    model = randomise(GPT(EVERY_FEATURE))
    ckpt = Artifact("checkpoint", dict(model.state_dict()), EVERY_FEATURE)
    artifacts.save(ckpt, tmp_path / "c.safetensors")
    loaded = artifacts.load(tmp_path / "c.safetensors", expect="checkpoint")
    assert loaded.model_config == EVERY_FEATURE and hash(loaded.model_config) == hash(EVERY_FEATURE)
    idx = torch.randint(2, BASE.vocab_size, (1, 12))
    assert torch.equal(build_model(loaded.model_config, loaded.tensors)(idx), model(idx))


def test_build_model_loads_strictly():
    state = GPT(BASE).state_dict()
    with pytest.raises(RuntimeError, match="Missing key"):
        build_model(BASE, {k: v for k, v in state.items() if k != "skip_weights"})
    with pytest.raises(RuntimeError, match="size mismatch"):
        build_model(dataclasses.replace(BASE, mlp_mult=3), state)
