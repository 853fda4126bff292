"""Every attention backend computes the same causal GQA attention.

The CPU reference test (SDPA against a plain softmax(QK^T/sqrt(d) + causal mask)V) is in
tests/test_model.py; these compare, on CUDA, the FlashAttention kernel that imports (FA3, else FA2)
and SDPA with the same reference, in bf16.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from stages import model as model_module
from stages.model import causal_attention

pytestmark = pytest.mark.gpu

# bf16 keeps 8 bits of mantissa: outputs of unit-scale attention agree to a few 1e-3.
BF16_ATOL = 2e-2


def _qkv(heads: int = 8, kv_heads: int = 2, seq: int = 256, head_dim: int = 64):
    g = torch.Generator(device="cuda").manual_seed(0)
    shape = (2, seq, heads, head_dim)
    kv_shape = (2, seq, kv_heads, head_dim)
    return tuple(torch.randn(s, generator=g, device="cuda", dtype=torch.bfloat16)
                 for s in (shape, kv_shape, kv_shape))


def _reference(q, k, v):
    """fp32 softmax attention with the causal mask and K/V heads repeated for GQA."""
    groups = q.size(2) // k.size(2)
    q, k, v = q.float(), k.float().repeat_interleave(groups, 2), v.float().repeat_interleave(groups, 2)
    scores = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(q.size(-1))
    t = q.size(1)
    mask = torch.triu(torch.ones(t, t, dtype=torch.bool, device=q.device), 1)
    return torch.einsum("bhts,bshd->bthd", F.softmax(scores.masked_fill(mask, float("-inf")), -1), v)


def _sdpa(q, k, v):
    y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                       is_causal=True, enable_gqa=True)
    return y.transpose(1, 2)


@pytest.mark.parametrize("kv_heads", [8, 2, 1])  # MHA, GQA, MQA
def test_sdpa_bf16_matches_the_reference_on_cuda(kv_heads):
    q, k, v = _qkv(kv_heads=kv_heads)
    assert (_sdpa(q, k, v).float() - _reference(q, k, v)).abs().max() < BF16_ATOL


@pytest.mark.parametrize("kv_heads", [8, 2])
def test_flash_attention_matches_sdpa_in_bf16(kv_heads):
    if model_module._flash_attn is None:
        pytest.skip("neither flash_attn_interface (FA3) nor flash_attn (FA2) imports")
    q, k, v = _qkv(kv_heads=kv_heads)
    flash = causal_attention(q, k, v)  # takes the flash path: CUDA and bf16
    assert flash.shape == q.shape and flash.dtype == torch.bfloat16
    ref = _reference(q, k, v)
    assert (flash.float() - ref).abs().max() < BF16_ATOL
    assert (flash.float() - _sdpa(q, k, v).float()).abs().max() < BF16_ATOL


def test_cuda_attention_is_causal():
    """Changing the last keys and values leaves every earlier output as it was."""
    q, k, v = _qkv()
    k2, v2 = k.clone(), v.clone()
    k2[:, 200:], v2[:, 200:] = -k2[:, 200:], v2[:, 200:] * 3
    a, b = causal_attention(q, k, v).float(), causal_attention(q, k2, v2).float()
    assert (a[:, :200] - b[:, :200]).abs().max() < 1e-3
    assert (a[:, 200:] - b[:, 200:]).abs().max() > 0.1
