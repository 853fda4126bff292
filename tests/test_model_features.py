"""Record-stack model features: each off by default, each doing what the spec says when on."""

import dataclasses

import pytest
import torch

from stages.config import ConfigError, ModelConfig, build_section
from stages.model import GPT, Rotary, count_parameters, exclusive
from stages.optim import split_parameters
from tests.conftest import TINY_MODEL, train_briefly

BASE = ModelConfig(**{**TINY_MODEL, "num_layers": 4})
ALL_ON = dataclasses.replace(BASE, activation="leaky_relu2", rope_dims=8, ln_scale=True,
                             xsa_last_n=2, skip_gates=True, smear_gate=True, attn_out_gate=True,
                             ortho_init=True)


def _randomise(model):
    torch.manual_seed(1)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return model


def test_defaults_are_the_baseline():
    assert count_parameters(ModelConfig()) == 17_059_912
    assert set(GPT(BASE).state_dict()) == set(GPT(dataclasses.replace(BASE, rope_dims=0)).state_dict())


def test_parameter_counts_of_the_features():
    base = count_parameters(BASE)
    d, hidden, layers, heads = BASE.model_dim, BASE.mlp_mult * BASE.model_dim, 4, BASE.num_heads
    assert count_parameters(dataclasses.replace(BASE, activation="swiglu")) == base + layers * d * hidden
    assert count_parameters(dataclasses.replace(BASE, attn_out_gate=True)) == base + layers * heads * 12
    assert count_parameters(dataclasses.replace(BASE, smear_gate=True)) == base + 12 + 1
    assert count_parameters(dataclasses.replace(BASE, skip_gates=True)) == base + 2 * d
    for flag in ("ln_scale", "ortho_init"):
        assert count_parameters(dataclasses.replace(BASE, **{flag: True})) == base
    assert count_parameters(dataclasses.replace(BASE, xsa_last_n=4, rope_dims=4)) == base


@pytest.mark.parametrize("change", [dict(smear_gate=True), dict(attn_out_gate=True)])
def test_zero_initialised_gates_start_as_the_identity(change):
    torch.manual_seed(0)
    plain = _randomise(GPT(BASE))
    gated = GPT(dataclasses.replace(BASE, **change))
    gated.load_state_dict(plain.state_dict(), strict=False)
    idx = torch.randint(0, BASE.vocab_size, (2, 16))
    assert torch.allclose(plain(idx), gated(idx), atol=1e-6)


def test_smear_gate_never_blends_across_a_document_boundary():
    model = GPT(dataclasses.replace(BASE, smear_gate=True))
    with torch.no_grad():
        model.smear_lambda.fill_(1.0)
        model.smear_w.normal_()
    x = torch.randn(1, 6, BASE.model_dim)
    idx = torch.tensor([[5, 7, 1, 9, 1, 3]])  # BOS (id 1) at positions 2 and 4
    out = model.smear(x, idx)
    assert torch.equal(out[0, 0], x[0, 0])  # nothing before the first token
    assert torch.equal(out[0, 2], x[0, 2]) and torch.equal(out[0, 4], x[0, 4])  # BOS rows untouched
    assert not torch.equal(out[0, 3], x[0, 3])  # inside a document the previous token blends in


def test_xsa_removes_the_own_value_direction():
    torch.manual_seed(0)
    y, v = torch.randn(2, 5, 4, 8), torch.randn(2, 5, 2, 8)
    out = exclusive(y, v)
    v_hat = torch.nn.functional.normalize(v, dim=-1).repeat_interleave(2, dim=2)
    assert (out * v_hat).sum(-1).abs().max() < 1e-5
    assert not torch.allclose(out, y)


def test_partial_rope_leaves_the_other_channels_alone():
    x = torch.randn(1, 7, 2, 16)
    out = Rotary(4, 10000.0)(x)
    assert torch.equal(out[..., 4:], x[..., 4:])
    assert torch.allclose(out[:, 0], x[:, 0])  # position 0 is not rotated
    assert not torch.allclose(out[:, 3, :, :4], x[:, 3, :, :4])


def test_ln_scale_and_orthogonal_init():
    model = GPT(ALL_ON)
    assert [b.norm_scale for b in model.blocks] == pytest.approx([1.0, 2**-0.5, 3**-0.5, 0.5])
    w = model.blocks[0].attn.c_q.weight
    assert torch.allclose(w @ w.T, torch.eye(w.size(0)), atol=1e-5)
    assert model.blocks[0].attn.proj.weight.abs().sum() == 0  # outputs stay zero-init
    assert [b.attn.xsa for b in model.blocks] == [False, False, True, True]


def test_all_features_together_are_causal_and_learn():
    torch.manual_seed(0)
    model = _randomise(GPT(ALL_ON))
    idx = torch.randint(2, BASE.vocab_size, (1, 20))
    changed = idx.clone()
    changed[0, 12:] = (changed[0, 12:] + 7) % BASE.vocab_size
    assert torch.allclose(model(idx)[0, :12], model(changed)[0, :12], atol=1e-5)

    torch.manual_seed(0)
    model = GPT(dataclasses.replace(ALL_ON, activation="swiglu"))
    first, last = train_briefly(model, torch.randint(0, BASE.vocab_size, (4, 32)), steps=25)
    assert last < 0.7 * first
    groups = split_parameters(model)
    scalar_names = {id(p) for p in groups["scalar"]}
    assert id(model.smear_w) in scalar_names and id(model.blocks[0].attn.attn_gate_w) in scalar_names


def test_feature_values_are_checked():
    with pytest.raises(ConfigError, match="model.activation must be one of"):
        build_section("model", {"activation": "gelu"})
    with pytest.raises(ConfigError, match="model.rope_dims must be even"):
        build_section("model", {"rope_dims": 7})
    with pytest.raises(ConfigError, match=r"model.xsa_last_n must be in \[0, 9\]"):
        build_section("model", {"xsa_last_n": 12})
