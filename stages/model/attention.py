"""Causal self-attention of the GPT: GQA with QK-RMSNorm, RoPE (partial, NTK-scaled), a per-head
query gain, and the record features that live inside attention (XSA, output gates, value embeddings).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from stages.model.config import ModelConfig
from stages.model.features import GATE_INPUT_DIMS
from stages.model.qat import QATLinear
from stages.model.roles import CONTROL, Role, matrix

try:  # optional: FlashAttention-3 (Hopper) or -2; PyTorch SDPA otherwise
    from flash_attn_interface import flash_attn_func as _flash_attn  # type: ignore
    from flash_attn_interface import flash_attn_varlen_func as _flash_attn_varlen  # type: ignore
except ImportError:
    try:
        from flash_attn import flash_attn_func as _flash_attn  # type: ignore
        from flash_attn import flash_attn_varlen_func as _flash_attn_varlen  # type: ignore
    except ImportError:
        _flash_attn = _flash_attn_varlen = None


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.size(-1),))


def attention_backend(q: torch.Tensor) -> str:
    """Which kernel `causal_attention` uses for inputs like `q`: flash-attn or SDPA."""
    if _flash_attn is not None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        return "flash_attn"
    return "sdpa"


@dataclass(frozen=True)
class Documents:
    """Where the documents of a batch of rows start, for document-isolated attention.

    A document starts at every BOS and at the start of every row (a row may begin inside one).
    `doc_id` (B, T) numbers each position's document within its row. `cu_seqlens` is what
    flash-attn's varlen kernel takes, built only where that kernel can run (`varlen_cu_seqlens`).
    """

    doc_id: torch.Tensor
    cu_seqlens: torch.Tensor | None = None

    @classmethod
    def of(cls, idx: torch.Tensor, bos_id: int) -> Documents:
        starts = idx == bos_id  # (B, T)
        starts[:, 0] = True
        # Only the varlen kernel needs the offsets; their data-dependent size would split a
        # compiled graph for nothing on the masked path.
        varlen = _flash_attn_varlen is not None and idx.is_cuda
        return cls(starts.cumsum(dim=1), varlen_cu_seqlens(starts) if varlen else None)

    def mask(self) -> torch.Tensor:
        """(B, 1, T, T) bool, True where query t may attend to key s: s <= t, same document."""
        T = self.doc_id.size(1)
        same = self.doc_id[:, :, None] == self.doc_id[:, None, :]  # (B, T, T)
        causal = torch.ones(T, T, dtype=torch.bool, device=same.device).tril()
        return (same & causal)[:, None]


def varlen_cu_seqlens(starts: torch.Tensor, bucket: int = 64) -> torch.Tensor:
    """int32 offsets of the documents in the flattened (B * T) batch, then B * T, padded with B * T
    (empty documents) to a multiple of `bucket` entries, as the best record pads them: a compiled
    graph then meets a few lengths rather than one per batch. `starts` (B, T) bool marks where
    documents start; none crosses a row, so none is longer than T."""
    flat = starts.flatten().nonzero().flatten()  # (documents,)
    size = -(-(flat.numel() + 1) // bucket) * bucket
    cu = torch.full((size,), starts.numel(), dtype=torch.int32, device=starts.device)
    cu[:flat.numel()] = flat.to(torch.int32)
    return cu


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     docs: Documents | None = None) -> torch.Tensor:
    """Causal attention with GQA. q (B, T, H, D), k/v (B, T, Hkv, D) -> (B, T, H, D).

    With `docs`, each position attends only within its own document: flash-attn's varlen kernel on
    the flattened batch where it runs, else SDPA with the block-diagonal causal mask.
    """
    if docs is not None:
        return document_attention(q, k, v, docs)
    if attention_backend(q) == "flash_attn":
        out = _flash_attn(q, k, v, causal=True)
        return out[0] if isinstance(out, tuple) else out
    y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                       is_causal=True, enable_gqa=q.size(2) != k.size(2))
    return y.transpose(1, 2)  # (B, H, T, D) -> (B, T, H, D)


def document_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       docs: Documents) -> torch.Tensor:
    """`causal_attention` restricted to documents; same shapes."""
    B, T, H, D = q.shape
    if docs.cu_seqlens is not None and _flash_attn_varlen is not None \
            and attention_backend(q) == "flash_attn":
        flat = [t.reshape(B * T, t.size(2), D) for t in (q, k, v)]  # (B * T, heads, D)
        out = _flash_attn_varlen(*flat, cu_seqlens_q=docs.cu_seqlens, cu_seqlens_k=docs.cu_seqlens,
                                 max_seqlen_q=T, max_seqlen_k=T, causal=True)
        out = out[0] if isinstance(out, tuple) else out
        return out.view(B, T, H, D)
    y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                       attn_mask=docs.mask(), enable_gqa=H != k.size(2))
    return y.transpose(1, 2)  # (B, H, T, D) -> (B, T, H, D)


class Rotary(nn.Module):
    """RoPE on the first `dims` channels of each head (all when dims = head_dim), half-split pairs
    with frequencies base^(-2i/dims); the other channels pass through (partial RoPE).

    With `ntk_train_len` > 0, a sequence longer than it uses the NTK-scaled base
    base * (T / ntk_train_len)^(dims / (dims - 2)), so evaluation can run longer than training.
    With `in_bf16`, positions, frequencies and angles are computed in bf16, as the public
    baseline's script does by accident (model.bfloat16() casts its inv_freq buffer too).
    """

    def __init__(self, dims: int, base: float, ntk_train_len: int = 0, in_bf16: bool = False):
        super().__init__()
        self.dims, self.base, self.ntk_train_len = dims, base, ntk_train_len
        self.dtype = torch.bfloat16 if in_bf16 else torch.float32
        self.register_buffer("inv_freq", self._inv_freq(base), persistent=False)

    def _inv_freq(self, base: float, device: torch.device | None = None) -> torch.Tensor:
        exponents = torch.arange(0, self.dims, 2, dtype=torch.float32, device=device) / self.dims
        return 1.0 / (base ** exponents)

    def frequencies(self, seq_len: int) -> torch.Tensor:
        """Inverse frequencies (dims/2,) for a sequence of `seq_len` positions."""
        if self.ntk_train_len and seq_len > self.ntk_train_len:
            stretch = (seq_len / self.ntk_train_len) ** (self.dims / (self.dims - 2))
            return self._inv_freq(self.base * stretch, self.inv_freq.device)
        return self.inv_freq

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate x (B, T, H, D) by position."""
        t = torch.arange(x.size(1), device=x.device, dtype=self.dtype)
        freqs = torch.outer(t, self.frequencies(x.size(1)).to(self.dtype))  # (T, dims/2)
        cos = freqs.cos()[None, :, None, :].to(x.dtype)  # (1, T, 1, dims/2)
        sin = freqs.sin()[None, :, None, :].to(x.dtype)
        rot, rest = x[..., :self.dims], x[..., self.dims:]
        x1, x2 = rot.chunk(2, dim=-1)
        return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin, rest), dim=-1)


def remove_own_value(y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """XSA: remove from each head's output its component along the token's own value vector.

    y (B, T, H, D), v (B, T, Hkv, D); head h uses the value of its KV head h // (H / Hkv).
    """
    B, T, H, D = y.shape
    v_hat = F.normalize(v.float(), dim=-1).to(y.dtype)[:, :, :, None, :]  # (B, T, Hkv, 1, D)
    yg = y.view(B, T, v.size(2), H // v.size(2), D)  # (B, T, Hkv, H/Hkv, D)
    yg = yg - (yg * v_hat).sum(dim=-1, keepdim=True) * v_hat
    return yg.view(B, T, H, D)


class CausalSelfAttention(nn.Module):
    """GQA attention with QK-RMSNorm, RoPE and a per-head query gain; optionally XSA, a per-head
    output gate (`attn_gate_w`) and this layer's share of the value embedding (`ve_lambda`)."""

    def __init__(self, cfg: ModelConfig, xsa: bool = False, value_embed: bool = False):
        super().__init__()
        self.xsa = xsa
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        kv_dim = self.num_kv_heads * self.head_dim
        self.c_q = QATLinear(cfg.model_dim, cfg.model_dim)
        self.c_k = QATLinear(cfg.model_dim, kv_dim)
        self.c_v = QATLinear(cfg.model_dim, kv_dim)
        self.proj = QATLinear(cfg.model_dim, cfg.model_dim)
        nn.init.zeros_(self.proj.weight)
        self.q_gain = nn.Parameter(torch.full((cfg.num_heads,), cfg.qk_gain_init))
        self.rotary = Rotary(cfg.rope_dims or self.head_dim, cfg.rope_base, cfg.rope_ntk_train_len,
                             cfg.rope_bf16)
        # Per-head output gates, both zero-init: 2*sigmoid(0) = 1 is the identity ("out"),
        # sigmoid(0) = 0.5 a uniform halving that attn_scale absorbs ("sparse").
        self.gate_kind, self.gate_scale = cfg.attn_gate, cfg.attn_gate_scale
        self.attn_gate_w = (nn.Parameter(torch.zeros(cfg.num_heads, GATE_INPUT_DIMS))
                            if cfg.attn_gate != "none" else None)
        self.ve_lambda = nn.Parameter(torch.ones(1)) if value_embed else None

    def roles(self) -> dict[str, Role]:
        roles = {"c_q.weight": matrix("attn_q"), "c_k.weight": matrix("attn_k"),
                 "c_v.weight": matrix("attn_v"), "proj.weight": matrix("attn_out"),
                 "q_gain": CONTROL}
        roles |= {name: CONTROL for name in ("attn_gate_w", "ve_lambda")
                  if getattr(self, name) is not None}
        return roles

    def _gate(self, x: torch.Tensor) -> torch.Tensor:
        """Per-head gate (B, T, H, 1) from the first channels of the attention input."""
        z = x[..., :GATE_INPUT_DIMS] @ self.attn_gate_w.to(x.dtype).T  # (B, T, H)
        g = 2 * torch.sigmoid(z) if self.gate_kind == "out" else torch.sigmoid(self.gate_scale * z)
        return g[..., None]

    def forward(self, x: torch.Tensor, ve: torch.Tensor | None = None,
                docs: Documents | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.num_heads, self.head_dim)  # (B, T, H, D)
        k = self.c_k(x).view(B, T, self.num_kv_heads, self.head_dim)  # (B, T, Hkv, D)
        v = self.c_v(x)  # (B, T, Hkv * D)
        if ve is not None and self.ve_lambda is not None:
            v = v + self.ve_lambda.to(v.dtype) * ve.to(v.dtype)
        v = v.view(B, T, self.num_kv_heads, self.head_dim)  # (B, T, Hkv, D)
        q, k = self.rotary(rms_norm(q)), self.rotary(rms_norm(k))
        q = q * self.q_gain.to(q.dtype)[None, None, :, None]
        y = causal_attention(q, k, v, docs)  # (B, T, H, D)
        if self.xsa:
            y = remove_own_value(y, v)
        if self.attn_gate_w is not None:
            y = y * self._gate(x)
        return self.proj(y.reshape(B, T, C))  # heads concatenated: (B, T, H * D)
