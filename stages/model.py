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

Features of the later records (spec §2.3) are switched by `ModelConfig` fields and are off by
default, so the baseline is unchanged when none is set: the MLP activation (relu^2, LeakyReLU(0.5)^2,
SwiGLU), partial RoPE (`rope_dims`), LN scale 1/sqrt(l+1), XSA on the last N layers, gated U-Net
skips, the BOS-masked SmearGate, the attention output gate and orthogonal init.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stages.config import ModelConfig

BOS_TOKEN_ID = 1  # as in every shard (stages/data.py); SmearGate must not blend across it

try:  # optional: FlashAttention-3 (Hopper) or -2; PyTorch SDPA otherwise
    from flash_attn_interface import flash_attn_func as _flash_attn  # type: ignore
except ImportError:
    try:
        from flash_attn import flash_attn_func as _flash_attn  # type: ignore
    except ImportError:
        _flash_attn = None

# Parameters routed to the scalar Adam group (and kept fp32) besides every tensor with ndim < 2.
CONTROL_NAMES = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weights", "skip_gates",
                 "smear_", "attn_gate_w")
GATE_INPUT_DIMS = 12  # the gates of the records read only the first 12 channels


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
    """RoPE on the first `dims` channels of each head (all when dims = head_dim), half-split pairs
    with frequencies base^(-2i/dims); the other channels pass through (partial RoPE)."""

    def __init__(self, dims: int, base: float):
        super().__init__()
        self.dims = dims
        inv_freq = 1.0 / (base ** (torch.arange(0, dims, 2, dtype=torch.float32) / dims))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate x (B, T, H, D) by position."""
        t = torch.arange(x.size(1), device=x.device, dtype=torch.float32)
        freqs = torch.outer(t, self.inv_freq)  # (T, dims/2)
        cos = freqs.cos()[None, :, None, :].to(x.dtype)
        sin = freqs.sin()[None, :, None, :].to(x.dtype)
        rot, rest = x[..., :self.dims], x[..., self.dims:]
        x1, x2 = rot.chunk(2, dim=-1)
        return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin, rest), dim=-1)


def exclusive(y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """XSA: remove from each head's output its component along the token's own value vector.

    y (B, T, H, D), v (B, T, Hkv, D); head h uses the value of its KV head h // (H / Hkv).
    """
    B, T, H, D = y.shape
    v_hat = F.normalize(v.float(), dim=-1).to(y.dtype)[:, :, :, None, :]  # (B, T, Hkv, 1, D)
    yg = y.view(B, T, v.size(2), H // v.size(2), D)
    yg = yg - (yg * v_hat).sum(dim=-1, keepdim=True) * v_hat
    return yg.view(B, T, H, D)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, xsa: bool = False):
        super().__init__()
        self.xsa = xsa
        self.num_heads, self.num_kv_heads = cfg.num_heads, cfg.num_kv_heads
        self.head_dim = cfg.model_dim // cfg.num_heads
        kv_dim = self.num_kv_heads * self.head_dim
        self.c_q = nn.Linear(cfg.model_dim, cfg.model_dim, bias=False)
        self.c_k = nn.Linear(cfg.model_dim, kv_dim, bias=False)
        self.c_v = nn.Linear(cfg.model_dim, kv_dim, bias=False)
        self.proj = nn.Linear(cfg.model_dim, cfg.model_dim, bias=False)
        nn.init.zeros_(self.proj.weight)
        self.q_gain = nn.Parameter(torch.full((cfg.num_heads,), cfg.qk_gain_init))
        self.rotary = Rotary(cfg.rope_dims or self.head_dim, cfg.rope_base)
        if cfg.attn_out_gate:  # zero-init: 2*sigmoid(0) = 1, the identity
            self.attn_gate_w = nn.Parameter(torch.zeros(cfg.num_heads, GATE_INPUT_DIMS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.num_heads, self.head_dim)
        k = self.c_k(x).view(B, T, self.num_kv_heads, self.head_dim)
        v = self.c_v(x).view(B, T, self.num_kv_heads, self.head_dim)
        q, k = self.rotary(rms_norm(q)), self.rotary(rms_norm(k))
        q = q * self.q_gain.to(q.dtype)[None, None, :, None]
        y = causal_attention(q, k, v)  # (B, T, H, D)
        if self.xsa:
            y = exclusive(y, v)
        if hasattr(self, "attn_gate_w"):
            gate = 2 * torch.sigmoid(x[..., :GATE_INPUT_DIMS] @ self.attn_gate_w.to(x.dtype).T)
            y = y * gate[..., None]  # (B, T, H, 1)
        return self.proj(y.reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = cfg.mlp_mult * cfg.model_dim
        self.activation = cfg.activation
        self.fc = nn.Linear(cfg.model_dim, hidden, bias=False)
        if cfg.activation == "swiglu":
            self.gate = nn.Linear(cfg.model_dim, hidden, bias=False)
        self.proj = nn.Linear(hidden, cfg.model_dim, bias=False)
        nn.init.zeros_(self.proj.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        if self.activation == "relu2":
            h = F.relu(h).square()
        elif self.activation == "leaky_relu2":
            h = F.leaky_relu(h, negative_slope=0.5).square()
        else:  # swiglu
            h = F.silu(self.gate(x)) * h
        return self.proj(h)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int = 0):
        super().__init__()
        self.attn = CausalSelfAttention(cfg, xsa=layer >= cfg.num_layers - cfg.xsa_last_n)
        self.mlp = MLP(cfg)
        self.norm_scale = 1.0 / (layer + 1) ** 0.5 if cfg.ln_scale else 1.0
        self.attn_scale = nn.Parameter(torch.ones(cfg.model_dim))
        self.mlp_scale = nn.Parameter(torch.ones(cfg.model_dim))
        self.resid_mix = nn.Parameter(torch.stack([torch.ones(cfg.model_dim),
                                                   torch.zeros(cfg.model_dim)]))

    def forward(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        x = x + self.attn_scale.to(x.dtype) * self.attn(rms_norm(x) * self.norm_scale)
        return x + self.mlp_scale.to(x.dtype) * self.mlp(rms_norm(x) * self.norm_scale)


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.model_dim)
        nn.init.normal_(self.tok_emb.weight, std=cfg.tied_embed_init_std)
        self.blocks = nn.ModuleList(Block(cfg, layer) for layer in range(cfg.num_layers))
        self.num_encoder = cfg.num_layers // 2
        num_skips = min(self.num_encoder, cfg.num_layers - self.num_encoder)
        self.skip_weights = nn.Parameter(torch.ones(num_skips, cfg.model_dim))
        if cfg.skip_gates:  # zero-init: sigmoid(0) = 0.5, an even blend of stream and skip
            self.skip_gates = nn.Parameter(torch.zeros(num_skips, cfg.model_dim))
        if cfg.smear_gate:  # zero-init lambda: the identity at init
            self.smear_w = nn.Parameter(torch.zeros(GATE_INPUT_DIMS))
            self.smear_lambda = nn.Parameter(torch.zeros(1))
        if cfg.ortho_init:
            self._orthogonal_init()
        self.final_norm = RMSNorm()  # its output is the tied head's input (GPTQ hooks it)

    def _orthogonal_init(self) -> None:
        """Orthogonal init for matrices of at least 64 x 64; zero-init outputs stay zero."""
        zero_init = ("attn.proj.weight", "mlp.proj.weight")  # output projections start at zero
        for name, p in self.named_parameters():
            if (p.ndim == 2 and min(p.shape) >= 64 and name != "tok_emb.weight"
                    and not name.endswith(zero_init)):
                nn.init.orthogonal_(p, gain=1.0)

    def smear(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """SmearGate (modded-nanogpt style, with the BOS fix of the best record):
        x_t += lambda * sigmoid(w . x_t[:12]) * x_{t-1} * [id_t != BOS]; never mixes across documents."""
        gate = torch.sigmoid(x[..., :GATE_INPUT_DIMS] @ self.smear_w.to(x.dtype))[..., None]
        prev = F.pad(x[:, :-1], (0, 0, 1, 0))  # x_{t-1}, zero before the first position
        not_bos = (idx != BOS_TOKEN_ID).to(x.dtype)[..., None]
        return x + self.smear_lambda.to(x.dtype) * gate * prev * not_bos

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) in fp32 for token ids (B, T)."""
        x = self.tok_emb(idx)
        if self.config.smear_gate:
            x = self.smear(x, idx)
        x = rms_norm(x)
        x0 = x
        skips = []
        for i, block in enumerate(self.blocks):
            if i >= self.num_encoder and skips:
                j = i - self.num_encoder
                skip = self.skip_weights[j].to(x.dtype) * skips.pop()
                if self.config.skip_gates:
                    g = torch.sigmoid(self.skip_gates[j]).to(x.dtype)
                    x = g * x + (1 - g) * skip
                else:
                    x = x + skip
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
