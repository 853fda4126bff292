import math

import torch
import torch.nn.functional as F

from stages.config import ModelConfig
from stages.model import GPT, causal_attention, count_parameters
from tests.conftest import TINY_MODEL


def test_full_baseline_parameter_count():
    assert count_parameters(ModelConfig()) == 17_059_912  # spec §2.1


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


def test_model_is_causal():
    torch.manual_seed(0)
    cfg = ModelConfig(**TINY_MODEL)
    model = GPT(cfg)
    for p in model.parameters():  # leave the zero init so attention actually mixes positions
        torch.nn.init.normal_(p, std=0.1)
    idx = torch.randint(0, cfg.vocab_size, (1, 20))
    changed = idx.clone()
    changed[0, 12:] = (changed[0, 12:] + 7) % cfg.vocab_size
    a, b = model(idx), model(changed)
    assert torch.allclose(a[0, :12], b[0, :12], atol=1e-5)
    assert not torch.allclose(a[0, 12:], b[0, 12:], atol=1e-3)


def test_sdpa_gqa_matches_reference_attention():
    torch.manual_seed(0)
    q = torch.randn(2, 10, 4, 8)
    k, v = torch.randn(2, 10, 2, 8), torch.randn(2, 10, 2, 8)
    kk, vv = k.repeat_interleave(2, dim=2), v.repeat_interleave(2, dim=2)
    scores = torch.einsum("bthd,bshd->bhts", q, kk) / math.sqrt(8)
    scores = scores.masked_fill(torch.triu(torch.ones(10, 10, dtype=torch.bool), 1), float("-inf"))
    ref = torch.einsum("bhts,bshd->bthd", F.softmax(scores, dim=-1), vv)
    assert torch.allclose(causal_attention(q, k, v), ref, atol=1e-5)
