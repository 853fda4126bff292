"""Input-side features: BigramHash, value embeddings, SmearGate; none may look across a BOS."""

import dataclasses

import pytest
import torch

from stages.data.shards import BOS_ID
from stages.model.features import bigram_buckets, smear, smear_blend
from stages.model.gpt import GPT, count_parameters
from tests.conftest import BASE, EVERY_FEATURE, randomise, same_weights


def test_bigram_buckets_hash_pairs_and_never_look_across_bos():
    idx = torch.tensor([[5, 7, BOS_ID, 9, 11]])
    b = bigram_buckets(idx, 64)
    assert b[0, 0] == 63 and b[0, 2] == 63  # position 0 and the BOS have no previous token
    assert b[0, 1] == ((36313 * 7) ^ (27191 * 5)) % 63
    assert b[0, 3] == ((36313 * 9) ^ (27191 * BOS_ID)) % 63  # a document's first token
    assert int(b.max()) < 64


def test_smear_gate_never_blends_across_a_document_boundary():
    torch.manual_seed(0)
    x = torch.randn(1, 6, BASE.model_dim)
    idx = torch.tensor([[5, 7, BOS_ID, 9, BOS_ID, 3]])
    out = smear(x, idx, torch.randn(12), torch.ones(1))
    assert torch.equal(out[0, 0], x[0, 0])  # nothing before the first token
    assert torch.equal(out[0, 2], x[0, 2]) and torch.equal(out[0, 4], x[0, 4])  # BOS rows untouched
    assert not torch.equal(out[0, 3], x[0, 3])  # inside a document the previous token blends in
    assert torch.equal(smear(x, idx, torch.randn(12), torch.zeros(1)), x)  # lambda 0: identity


def test_embedding_input_never_sees_the_previous_document():
    model = randomise(GPT(EVERY_FEATURE))  # bigram table and projection non-zero, smear on
    idx = torch.tensor([[5, 7, 8, BOS_ID, 9, 11]])
    other = idx.clone()
    other[0, :3] = torch.tensor([20, 30, 40])  # a different previous document
    a, b = model.embed(idx), model.embed(other)
    assert torch.equal(a[0, 3:], b[0, 3:])
    assert not torch.equal(a[0, :3], b[0, :3])


@pytest.mark.parametrize("change, module", [(dict(bigram_buckets=32, bigram_dim=8), "bigram"),
                                            (dict(ve_layers=[1, 3], ve_dim=8), "ve")])
def test_zero_initialised_embeddings_matter_once_trained(change, module):
    torch.manual_seed(0)
    plain = randomise(GPT(BASE))
    extended = GPT(dataclasses.replace(BASE, **change))
    extended.load_state_dict(plain.state_dict(), strict=False)
    idx = torch.randint(2, BASE.vocab_size, (2, 16))
    added = extended.get_submodule(module)
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
    randomise(model)
    idx = torch.randint(2, BASE.vocab_size, (1, 12))
    with torch.no_grad():  # zero weight in every chosen layer: the embedding no longer matters
        for i in cfg.ve_layers:
            model.blocks[i].attn.ve_lambda.zero_()
    without = same_weights(BASE, model)
    assert torch.allclose(model(idx), without(idx), atol=1e-5)


@pytest.mark.parametrize("module, change", [("bigram", dict(bigram_buckets=32, bigram_dim=16)),
                                            ("ve", dict(ve_layers=[1, 3], ve_dim=16))])
def test_feature_projections_start_orthogonal_scaled_by_depth(module, change):
    """As the records' `_init_weights` (PR #401's GPT: orthogonal, `.proj` times 1/sqrt(2L)), with
    ortho_init on or off: orthonormal columns times 1/sqrt(2 x 4 layers)."""
    for ortho in (False, True):
        torch.manual_seed(0)
        w = GPT(dataclasses.replace(BASE, ortho_init=ortho, **change)).get_submodule(
            module).proj.weight  # (out, 16), out > 16
        assert torch.allclose(w.T @ w, torch.eye(16) / (2 * BASE.num_layers), atol=1e-6)


def test_bigram_hash_learns_from_the_first_step():
    """The table starts at zero but the projection does not, so the table's gradient is non-zero
    at step 0, and the projection's from the step after (once the table is non-zero)."""
    torch.manual_seed(0)
    model = GPT(dataclasses.replace(BASE, bigram_buckets=32, bigram_dim=16))
    idx = torch.randint(2, BASE.vocab_size, (2, 17))
    model.loss(idx[:, :-1], idx[:, 1:]).backward()
    assert model.bigram.embed.weight.grad.abs().sum() > 0
    with torch.no_grad():
        model.bigram.embed.weight -= model.bigram.embed.weight.grad
    model.zero_grad()
    model.loss(idx[:, :-1], idx[:, 1:]).backward()
    assert model.bigram.proj.weight.grad.abs().sum() > 0


def test_blend_smear_gate_is_the_old_per_channel_blend_kept_off_bos():
    torch.manual_seed(0)
    x = torch.randn(1, 5, 8)
    idx = torch.tensor([[5, 7, BOS_ID, 9, 11]])
    gate = torch.randn(8)
    g = torch.sigmoid(gate)
    out = smear_blend(x, idx, gate)
    assert torch.allclose(out[0, 0], (1 - g) * x[0, 0])  # nothing before the first position
    for t in (1, 3, 4):
        assert torch.allclose(out[0, t], (1 - g) * x[0, t] + g * x[0, t - 1])
    assert torch.equal(out[0, 2], x[0, 2])  # a BOS keeps its own embedding
    half = smear_blend(x, idx, torch.zeros(8))  # at init: an even blend
    assert torch.allclose(half[0, 1], (x[0, 0] + x[0, 1]) / 2)


def test_blend_smear_gate_follows_the_embedding_norm_and_has_a_gate_per_channel():
    cfg = dataclasses.replace(BASE, smear_gate=True, smear_gate_style="blend")
    assert count_parameters(cfg) == count_parameters(BASE) + BASE.model_dim
    model = randomise(GPT(cfg))
    assert model.smear_w is None and model.smear_lambda is None
    idx = torch.tensor([[5, 7, 8, BOS_ID, 9]])
    normed = torch.nn.functional.rms_norm(model.tok_emb(idx), (BASE.model_dim,))
    assert torch.allclose(model.embed(idx), smear_blend(normed, idx, model.smear_blend))
