"""Attention: golf's `causal_attention` against a plain softmax(QK^T / sqrt(d) + mask) V on every
backend it can take (SDPA on the CPU; SDPA and FlashAttention on CUDA), RoPE, XSA and the gates."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from stages.model import attention
from stages.model.attention import (
    CausalSelfAttention,
    Rotary,
    attention_backend,
    causal_attention,
    remove_own_value,
)
from stages.model.config import ModelConfig
from tests.conftest import BASE, randomise

# bf16 keeps 8 bits of mantissa: outputs of unit-scale attention agree to a few 1e-3.
BF16_ATOL = 2e-2


def _reference(q, k, v):
    """fp32 softmax attention with the causal mask and K/V heads repeated for GQA."""
    groups = q.size(2) // k.size(2)
    q = q.float()
    k, v = k.float().repeat_interleave(groups, 2), v.float().repeat_interleave(groups, 2)
    scores = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(q.size(-1))
    t = q.size(1)
    mask = torch.triu(torch.ones(t, t, dtype=torch.bool, device=q.device), 1)
    weights = F.softmax(scores.masked_fill(mask, float("-inf")), -1)
    return torch.einsum("bhts,bshd->bthd", weights, v)


def _qkv(kv_heads, heads=4, seq=10, head_dim=8, device="cpu", dtype=torch.float32):
    g = torch.Generator(device=device).manual_seed(0)
    shapes = ((2, seq, heads, head_dim), (2, seq, kv_heads, head_dim), (2, seq, kv_heads, head_dim))
    return tuple(torch.randn(s, generator=g, device=device, dtype=dtype) for s in shapes)


@pytest.mark.parametrize("kv_heads", [4, 2, 1], ids=["MHA", "GQA", "MQA"])
def test_causal_attention_on_cpu_matches_the_reference(kv_heads):
    q, k, v = _qkv(kv_heads)
    assert attention_backend(q) == "sdpa"
    out = causal_attention(q, k, v)
    assert out.shape == q.shape
    assert torch.allclose(out, _reference(q, k, v), atol=1e-5)


def test_xsa_removes_the_own_value_direction():
    torch.manual_seed(0)
    y, v = torch.randn(2, 5, 4, 8), torch.randn(2, 5, 2, 8)
    out = remove_own_value(y, v)
    v_hat = F.normalize(v, dim=-1).repeat_interleave(2, dim=2)
    assert (out * v_hat).sum(-1).abs().max() < 1e-5
    assert not torch.allclose(out, y)


def test_partial_rope_leaves_the_other_channels_alone():
    x = torch.randn(1, 7, 2, 16)
    out = Rotary(4, 10000.0)(x)
    assert torch.equal(out[..., 4:], x[..., 4:])
    assert torch.allclose(out[:, 0], x[:, 0])  # position 0 is not rotated
    assert not torch.allclose(out[:, 3, :, :4], x[:, 3, :, :4])


def test_ntk_rope_rescales_the_base_only_beyond_the_training_length():
    x = torch.randn(1, 24, 2, 16)
    plain, ntk = Rotary(8, 10000.0), Rotary(8, 10000.0, ntk_train_len=16)
    assert torch.equal(ntk(x[:, :16]), plain(x[:, :16]))
    stretched = Rotary(8, 10000.0 * (24 / 16) ** (8 / 6))
    assert torch.allclose(ntk(x), stretched(x), atol=1e-6)
    assert not torch.allclose(ntk(x), plain(x), atol=1e-3)


def test_sparse_attention_gate_halves_at_init_and_reads_twelve_channels():
    torch.manual_seed(0)
    plain = randomise(CausalSelfAttention(BASE))
    gated = CausalSelfAttention(dataclasses.replace(BASE, attn_gate="sparse"))
    gated.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(2, 8, 64)
    assert torch.allclose(gated(x), 0.5 * plain(x), atol=1e-6)  # sigmoid(0) = 0.5
    with torch.no_grad():
        gated.attn_gate_w.normal_()
    x2 = x.clone()
    x2[..., 12:] += 1.0  # channels beyond the window move the attention, not the gate
    g = torch.sigmoid(0.5 * x[..., :12] @ gated.attn_gate_w.T)
    assert torch.allclose(gated._gate(x2)[..., 0], g)
    assert not torch.allclose(gated(x), 0.5 * plain(x), atol=1e-4)


# --- CUDA: the same function, on each kernel it can take ------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("kv_heads", [8, 2, 1], ids=["MHA", "GQA", "MQA"])
def test_sdpa_bf16_matches_the_reference_on_cuda(kv_heads, monkeypatch):
    monkeypatch.setattr(attention, "_flash_attn", None)  # SDPA even where flash-attn imports
    q, k, v = _qkv(kv_heads, heads=8, seq=256, head_dim=64, device="cuda", dtype=torch.bfloat16)
    assert attention_backend(q) == "sdpa"
    assert (causal_attention(q, k, v).float() - _reference(q, k, v)).abs().max() < BF16_ATOL


@pytest.mark.gpu
@pytest.mark.parametrize("kv_heads", [8, 2], ids=["MHA", "GQA"])
def test_flash_attention_matches_sdpa_in_bf16(kv_heads, monkeypatch):
    if attention._flash_attn is None:
        pytest.skip("neither flash_attn_interface (FA3) nor flash_attn (FA2) imports")
    q, k, v = _qkv(kv_heads, heads=8, seq=256, head_dim=64, device="cuda", dtype=torch.bfloat16)
    assert attention_backend(q) == "flash_attn"
    flash = causal_attention(q, k, v)
    assert flash.shape == q.shape and flash.dtype == torch.bfloat16
    assert (flash.float() - _reference(q, k, v)).abs().max() < BF16_ATOL
    monkeypatch.setattr(attention, "_flash_attn", None)
    assert (flash.float() - causal_attention(q, k, v).float()).abs().max() < BF16_ATOL


@pytest.mark.gpu
def test_cuda_attention_is_causal():
    """Changing the last keys and values leaves every earlier output as it was."""
    q, k, v = _qkv(2, heads=8, seq=256, head_dim=64, device="cuda", dtype=torch.bfloat16)
    k2, v2 = k.clone(), v.clone()
    k2[:, 200:], v2[:, 200:] = -k2[:, 200:], v2[:, 200:] * 3
    a, b = causal_attention(q, k, v).float(), causal_attention(q, k2, v2).float()
    assert (a[:, :200] - b[:, :200]).abs().max() < 1e-3
    assert (a[:, 200:] - b[:, 200:]).abs().max() > 0.1


def test_bf16_rope_rounds_positions_as_the_public_baselines_script():
    """The public train_gpt.py casts its model, RoPE's inv_freq buffer included, to bf16, so its
    positions have 8 significant bits: 257 rotates as 256, 1023 as 1024. With rope_bf16 golf
    does the same, and without it every position is distinct."""
    x = torch.ones(1, 1030, 1, 8)
    exact, rounded = Rotary(8, 10000.0)(x), Rotary(8, 10000.0, in_bf16=True)(x)
    assert torch.equal(rounded[0, 257], rounded[0, 256])
    assert torch.equal(rounded[0, 1023], rounded[0, 1024])
    assert not torch.equal(exact[0, 257], exact[0, 256])
    # small positions are exact; only the angles' bf16 rounding moves them a little
    assert torch.allclose(rounded[0, :8], exact[0, :8], atol=0.05)


def test_rope_bf16_is_stored_only_when_on():
    plain = ModelConfig()
    assert "rope_bf16" not in plain.to_metadata()
    on = dataclasses.replace(plain, rope_bf16=True)
    assert ModelConfig.from_metadata(on.to_metadata()) == on
    assert ModelConfig.from_metadata(plain.to_metadata()) == plain
