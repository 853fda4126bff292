"""The baseline GPT of the parameter-golf challenge (spec §2.1), built only from `ModelConfig`.

    x = rms_norm(tok_emb[ids]); x0 = x
    block: x = resid_mix[0] * x + resid_mix[1] * x0
           x = x + attn_scale * attn(rms_norm(x))      # q,k rms-normed, RoPE, per-head q_gain, GQA
           x = x + mlp_scale * mlp(rms_norm(x))        # down(relu(up(x))^2)
    U-Net: the first L//2 blocks push their outputs; each later block first adds skip_weights[i] * pop()
    logits = softcap * tanh((rms_norm(x) @ tok_emb.T) / softcap)          # tied embedding

Tensor names are the canonical ones used in every saved artifact (and match the public baseline
`train_gpt.py`, so its checkpoints map one to one). Output projections start at zero, so every block
starts as the identity. The full preset (9 x 512, vocab 1024) has 17,059,912 parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stages.config import ModelConfig

try:  # optional: FlashAttention-3 (Hopper) or -2; PyTorch SDPA otherwise
    from flash_attn_interface import flash_attn_func as _flash_attn  # type: ignore
except ImportError:
    try:
        from flash_attn import flash_attn_func as _flash_attn  # type: ignore
    except ImportError:
        _flash_attn = None

# Parameters routed to the scalar Adam group (and kept fp32) besides every tensor with ndim < 2.
CONTROL_NAMES = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weights")


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.size(-1),))


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention with GQA. q (B, T, H, D), k/v (B, T, Hkv, D) -> (B, T, H, D)."""
    if _flash_attn is not None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        out = _flash_attn(q, k, v, causal=True)
        return out[0] if isinstance(out, tuple) else out
    y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                       is_causal=True, enable_gqa=q.size(2) != k.size(2))
    return y.transpose(1, 2)


class RMSNorm(nn.Module):
    """Parameterless RMSNorm as a module, where a hook needs to see its output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x)


class Rotary(nn.Module):
    def __init__(self, head_dim: int, base: float):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate x (B, T, H, D) by position, half-split layout."""
        t = torch.arange(x.size(1), device=x.device, dtype=torch.float32)
        freqs = torch.outer(t, self.inv_freq)  # (T, D/2)
        cos = freqs.cos()[None, :, None, :].to(x.dtype)
        sin = freqs.sin()[None, :, None, :].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.num_heads, self.num_kv_heads = cfg.num_heads, cfg.num_kv_heads
        self.head_dim = cfg.model_dim // cfg.num_heads
        kv_dim = self.num_kv_heads * self.head_dim
        self.c_q = nn.Linear(cfg.model_dim, cfg.model_dim, bias=False)
        self.c_k = nn.Linear(cfg.model_dim, kv_dim, bias=False)
        self.c_v = nn.Linear(cfg.model_dim, kv_dim, bias=False)
        self.proj = nn.Linear(cfg.model_dim, cfg.model_dim, bias=False)
        nn.init.zeros_(self.proj.weight)
        self.q_gain = nn.Parameter(torch.full((cfg.num_heads,), cfg.qk_gain_init))
        self.rotary = Rotary(self.head_dim, cfg.rope_base)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.num_heads, self.head_dim)
        k = self.c_k(x).view(B, T, self.num_kv_heads, self.head_dim)
        v = self.c_v(x).view(B, T, self.num_kv_heads, self.head_dim)
        q, k = self.rotary(rms_norm(q)), self.rotary(rms_norm(k))
        q = q * self.q_gain.to(q.dtype)[None, None, :, None]
        y = causal_attention(q, k, v)  # (B, T, H, D)
        return self.proj(y.reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.model_dim, cfg.mlp_mult * cfg.model_dim, bias=False)
        self.proj = nn.Linear(cfg.mlp_mult * cfg.model_dim, cfg.model_dim, bias=False)
        nn.init.zeros_(self.proj.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.relu(self.fc(x)).square())


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn = CausalSelfAttention(cfg)
        self.mlp = MLP(cfg)
        self.attn_scale = nn.Parameter(torch.ones(cfg.model_dim))
        self.mlp_scale = nn.Parameter(torch.ones(cfg.model_dim))
        self.resid_mix = nn.Parameter(torch.stack([torch.ones(cfg.model_dim),
                                                   torch.zeros(cfg.model_dim)]))

    def forward(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        x = x + self.attn_scale.to(x.dtype) * self.attn(rms_norm(x))
        return x + self.mlp_scale.to(x.dtype) * self.mlp(rms_norm(x))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.model_dim)
        nn.init.normal_(self.tok_emb.weight, std=cfg.tied_embed_init_std)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.num_encoder = cfg.num_layers // 2
        num_skips = min(self.num_encoder, cfg.num_layers - self.num_encoder)
        self.skip_weights = nn.Parameter(torch.ones(num_skips, cfg.model_dim))
        self.final_norm = RMSNorm()  # its output is the tied head's input (GPTQ hooks it)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) in fp32 for token ids (B, T)."""
        x = rms_norm(self.tok_emb(idx))
        x0 = x
        skips = []
        for i, block in enumerate(self.blocks):
            if i >= self.num_encoder and skips:
                x = x + self.skip_weights[i - self.num_encoder].to(x.dtype) * skips.pop()
            x = block(x, x0)
            if i < self.num_encoder:
                skips.append(x)
        logits = F.linear(self.final_norm(x), self.tok_emb.weight.to(x.dtype)).float()
        cap = self.config.logit_softcap
        return cap * torch.tanh(logits / cap)

    def token_nll(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-token negative log-likelihood in nats, (B, T), fp32."""
        logits = self(idx)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten().long(),
                               reduction="none").view_as(targets).float()

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.token_nll(idx, targets).mean()


def count_parameters(cfg: ModelConfig) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in GPT(cfg).parameters())


def build_model(cfg: ModelConfig, state: dict[str, torch.Tensor] | None = None,
                device: str | torch.device = "cpu") -> GPT:
    """A GPT for `cfg`, optionally loaded (strictly: names and shapes must match) from `state`."""
    model = GPT(cfg)
    if state is not None:
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.to(device)
