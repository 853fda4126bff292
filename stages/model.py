"""The GPT of the parameter-golf challenge (spec §2.1), built only from `ModelConfig`.

    x = rms_norm(tok_emb[ids]); x0 = x
    block: x = resid_mix[0] * x + resid_mix[1] * x0
           x = x + attn_scale * attn(rms_norm(x))      # q,k rms-normed, RoPE, per-head q_gain, GQA
           x = x + mlp_scale * mlp(rms_norm(x))        # down(relu(up(x))^2)
    U-Net: the first half of the layers push their outputs; each later layer first adds
           skip_weights[j] * pop()
    logits = softcap * tanh((rms_norm(x) @ tok_emb.T) / softcap)          # tied embedding

Tensor names are the canonical ones used in every saved artifact (and match the public baseline
`train_gpt.py`, so its checkpoints map one to one). Output projections start at zero, so every block
starts as the identity. The full preset (9 x 512, vocab 1024) has 17,059,912 parameters.

Features of the later records (spec §2.3) are switched by `ModelConfig` fields and are off by
default, so the baseline is unchanged when none is set:
- MLP activation (relu^2, LeakyReLU(0.5)^2, SwiGLU); orthogonal init of the block matrices;
- attention: partial RoPE (`rope_dims`), NTK-scaled RoPE base beyond `rope_ntk_train_len`, LN scale
  1/sqrt(l+1) (l = physical layer), XSA on the last N physical layers, a per-head output gate
  (`attn_out_gate`: 2 sigmoid(W x[:12]); `sparse_attn_gate`: sigmoid(scale W x[:12]));
- inputs: BOS-masked SmearGate, BigramHash embedding, value embeddings (`ve_layers`);
- gated U-Net skips; parallel residuals (GPT-J, or two lanes);
- depth recurrence: physical layers loop_start..loop_end run `num_loops` extra times, weights
  shared. The virtual layer list is
      [0 .. start-1] + [start .. end] * (num_loops + 1) + [end+1 .. L-1]
  (BEST: 0 1 2 | 3 4 5 3 4 5 3 4 5 | 6 7 8 9 10, 17 virtual layers); its first floor(n/2)
  entries are the U-Net encoder, the rest the decoder, and there are min(#encoder, #decoder) skip slots of this
  looped layout (the plain layout uses the first ones). `set_looping(False)` runs the plain list
  0 .. L-1 (training switches looping on part-way); a new model has looping on when num_loops > 0.
- late QAT (`set_qat`): block matrices fake-quantized with a straight-through gradient.

Whatever the layout, the state_dict holds each physical tensor once under its canonical name (no
loop or lane copies, no buffers).
"""


from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stages.config import ModelConfig
from stages.qat import QATLinear, QATState

BOS_TOKEN_ID = 1  # as in every shard (stages/data.py); SmearGate and BigramHash must not cross it

try:  # optional: FlashAttention-3 (Hopper) or -2; PyTorch SDPA otherwise
    from flash_attn_interface import flash_attn_func as _flash_attn  # type: ignore
except ImportError:
    try:
        from flash_attn import flash_attn_func as _flash_attn  # type: ignore
    except ImportError:
        _flash_attn = None

# Parameters routed to the scalar Adam group (and kept fp32) besides every tensor with ndim < 2.
# Matched as substrings of the canonical names.
CONTROL_NAMES = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weights", "skip_gates",
                 "smear_", "attn_gate_w", "bigram.scale", "ve.scale", "ve_lambda", "parallel_")
# Lookup tables that, like the tied embedding, belong with the embedding optimizer group.
EMBEDDING_TABLE_NAMES = ("tok_emb.weight", "bigram.embed.weight", "ve.embed.weight")
GATE_INPUT_DIMS = 12  # the gates of the records read only the first 12 channels
# BigramHash multipliers of the records (spec §2.3): bucket = (A * cur XOR B * prev) mod (K - 1).
BIGRAM_HASH_CUR, BIGRAM_HASH_PREV = 36313, 27191


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


def virtual_layers(cfg: ModelConfig, looping: bool = True) -> tuple[int, ...]:
    """The physical layer run at each virtual position: 0 .. L-1, with loop_start..loop_end
    repeated `num_loops` extra times when looping (and num_loops > 0)."""
    if not looping or cfg.num_loops == 0:
        return tuple(range(cfg.num_layers))
    start, end = cfg.loop_start, cfg.loop_end
    return (tuple(range(start)) + tuple(range(start, end + 1)) * (cfg.num_loops + 1)
            + tuple(range(end + 1, cfg.num_layers)))


def num_skip_slots(layout: tuple[int, ...]) -> int:
    """U-Net skip connections of a layout: min(#encoder, #decoder), encoder = first half."""
    encoder = len(layout) // 2
    return min(encoder, len(layout) - encoder)


def bigram_buckets(idx: torch.Tensor, buckets: int) -> torch.Tensor:
    """BigramHash bucket of each position: (36313 cur XOR 27191 prev) mod (K - 1), and bucket K - 1
    at position 0 and wherever the current token is BOS, so no position ever hashes a token of the
    previous document."""
    cur = idx.long()
    prev = F.pad(cur[:, :-1], (1, 0))
    hashed = torch.bitwise_xor(BIGRAM_HASH_CUR * cur, BIGRAM_HASH_PREV * prev) % (buckets - 1)
    no_previous = cur == BOS_TOKEN_ID
    no_previous[:, 0] = True
    return hashed.masked_fill(no_previous, buckets - 1)


class RMSNorm(nn.Module):
    """Parameterless RMSNorm as a module, where a hook needs to see its output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x)


class Rotary(nn.Module):
    """RoPE on the first `dims` channels of each head (all when dims = head_dim), half-split pairs
    with frequencies base^(-2i/dims); the other channels pass through (partial RoPE).

    With `ntk_train_len` > 0, a sequence longer than it uses the NTK-scaled base
    base * (T / ntk_train_len)^(dims / (dims - 2)), so evaluation can run longer than training.
    """

    def __init__(self, dims: int, base: float, ntk_train_len: int = 0):
        super().__init__()
        self.dims, self.base, self.ntk_train_len = dims, base, ntk_train_len
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
        t = torch.arange(x.size(1), device=x.device, dtype=torch.float32)
        freqs = torch.outer(t, self.frequencies(x.size(1)))  # (T, dims/2)
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
    def __init__(self, cfg: ModelConfig, xsa: bool = False, value_embed: bool = False):
        super().__init__()
        self.xsa = xsa
        self.num_heads, self.num_kv_heads = cfg.num_heads, cfg.num_kv_heads
        self.head_dim = cfg.model_dim // cfg.num_heads
        kv_dim = self.num_kv_heads * self.head_dim
        self.c_q = QATLinear(cfg.model_dim, cfg.model_dim)
        self.c_k = QATLinear(cfg.model_dim, kv_dim)
        self.c_v = QATLinear(cfg.model_dim, kv_dim)
        self.proj = QATLinear(cfg.model_dim, cfg.model_dim)
        nn.init.zeros_(self.proj.weight)
        self.q_gain = nn.Parameter(torch.full((cfg.num_heads,), cfg.qk_gain_init))
        self.rotary = Rotary(cfg.rope_dims or self.head_dim, cfg.rope_base, cfg.rope_ntk_train_len)
        # Per-head output gates, both zero-init: 2*sigmoid(0) = 1 is the identity ("out"),
        # sigmoid(0) = 0.5 a uniform halving that attn_scale absorbs ("sparse").
        self.gate = "out" if cfg.attn_out_gate else "sparse" if cfg.sparse_attn_gate else None
        self.gate_scale = cfg.sparse_attn_gate_scale
        if self.gate:
            self.attn_gate_w = nn.Parameter(torch.zeros(cfg.num_heads, GATE_INPUT_DIMS))
        if value_embed:  # this layer's weight on the shared value embedding
            self.ve_lambda = nn.Parameter(torch.ones(1))

    def _gate(self, x: torch.Tensor) -> torch.Tensor:
        """Per-head gate (B, T, H, 1) from the first channels of the attention input."""
        z = x[..., :GATE_INPUT_DIMS] @ self.attn_gate_w.to(x.dtype).T
        g = 2 * torch.sigmoid(z) if self.gate == "out" else torch.sigmoid(self.gate_scale * z)
        return g[..., None]

    def forward(self, x: torch.Tensor, ve: torch.Tensor | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.num_heads, self.head_dim)
        k = self.c_k(x).view(B, T, self.num_kv_heads, self.head_dim)
        v = self.c_v(x)
        if ve is not None and hasattr(self, "ve_lambda"):
            v = v + self.ve_lambda.to(v.dtype) * ve.to(v.dtype)
        v = v.view(B, T, self.num_kv_heads, self.head_dim)
        q, k = self.rotary(rms_norm(q)), self.rotary(rms_norm(k))
        q = q * self.q_gain.to(q.dtype)[None, None, :, None]
        y = causal_attention(q, k, v)  # (B, T, H, D)
        if self.xsa:
            y = exclusive(y, v)
        if self.gate:
            y = y * self._gate(x)
        return self.proj(y.reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = cfg.mlp_mult * cfg.model_dim
        self.activation = cfg.activation
        self.fc = QATLinear(cfg.model_dim, hidden)
        if cfg.activation == "swiglu":
            self.gate = QATLinear(cfg.model_dim, hidden)
        self.proj = QATLinear(hidden, cfg.model_dim)
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
    """One physical layer. It runs sequentially (`forward`), GPT-J parallel (`parallel`) or on two
    lanes (`two_lane`), depending on where the layout places it; the weights are the same."""

    def __init__(self, cfg: ModelConfig, layer: int = 0):
        super().__init__()
        self.attn = CausalSelfAttention(cfg, xsa=layer >= cfg.num_layers - cfg.xsa_last_n,
                                        value_embed=layer in cfg.ve_layers)
        self.mlp = MLP(cfg)
        self.norm_scale = 1.0 / (layer + 1) ** 0.5 if cfg.ln_scale else 1.0
        self.attn_scale = nn.Parameter(torch.ones(cfg.model_dim))
        self.mlp_scale = nn.Parameter(torch.ones(cfg.model_dim))
        self.resid_mix = nn.Parameter(torch.stack([torch.ones(cfg.model_dim),
                                                   torch.zeros(cfg.model_dim)]))

    def mix(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        mix = self.resid_mix.to(x.dtype)
        return mix[0] * x + mix[1] * x0

    def attend(self, x: torch.Tensor, ve: torch.Tensor | None) -> torch.Tensor:
        return self.attn_scale.to(x.dtype) * self.attn(rms_norm(x) * self.norm_scale, ve)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp_scale.to(x.dtype) * self.mlp(rms_norm(x) * self.norm_scale)

    def forward(self, x: torch.Tensor, x0: torch.Tensor,
                ve: torch.Tensor | None = None) -> torch.Tensor:
        x = self.mix(x, x0)
        x = x + self.attend(x, ve)
        return x + self.feed_forward(x)

    def parallel(self, x: torch.Tensor, x0: torch.Tensor,
                 ve: torch.Tensor | None = None) -> torch.Tensor:
        """GPT-J style: attention and MLP both read the same input, x + a*Attn(N x) + s*MLP(N x)."""
        x = self.mix(x, x0)
        return x + self.attend(x, ve) + self.feed_forward(x)

    def two_lane(self, lane0: torch.Tensor, lane1: torch.Tensor, x0: torch.Tensor,
                 post: torch.Tensor, resid: torch.Tensor,
                 ve: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Two residual lanes (spec §2.3): attention reads lane0 (resid-mixed with x0), the MLP
        reads lane1 as it was before this layer; each lane keeps resid[lane] of itself and takes
        post[source, lane] of each output (source 0 = attention, 1 = MLP)."""
        lane0 = self.mix(lane0, x0)
        a, m = self.attend(lane0, ve), self.feed_forward(lane1)
        post, resid = post.to(lane0.dtype), resid.to(lane0.dtype)
        new0 = resid[0] * lane0 + post[0, 0] * a + post[1, 0] * m
        new1 = resid[1] * lane1 + post[0, 1] * a + post[1, 1] * m
        return new0, new1


class BigramHash(nn.Module):
    """Hashed (previous, current) token pair embedding, projected to the model width and scaled;
    table and projection start at zero, so it adds nothing at init."""

    def __init__(self, buckets: int, dim: int, model_dim: int):
        super().__init__()
        self.buckets = buckets
        self.embed = nn.Embedding(buckets, dim)
        nn.init.zeros_(self.embed.weight)
        self.proj = nn.Linear(dim, model_dim, bias=False)
        nn.init.zeros_(self.proj.weight)
        self.scale = nn.Parameter(torch.full((1,), 0.05))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.scale * self.proj(self.embed(bigram_buckets(idx, self.buckets)))


class ValueEmbedding(nn.Module):
    """A token table shared by the chosen layers, projected (zero-init) to the value width and
    scaled; each layer adds it to its values times its own `ve_lambda`."""

    def __init__(self, vocab_size: int, dim: int, kv_dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        nn.init.normal_(self.embed.weight, std=0.01)
        self.proj = nn.Linear(dim, kv_dim, bias=False)
        nn.init.zeros_(self.proj.weight)
        self.scale = nn.Parameter(torch.full((1,), 0.1))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.scale * self.proj(self.embed(idx))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.model_dim)
        nn.init.normal_(self.tok_emb.weight, std=cfg.tied_embed_init_std)
        self.blocks = nn.ModuleList(Block(cfg, layer) for layer in range(cfg.num_layers))
        # Skip slots for the longest layout (the looped one); the plain layout uses the first ones.
        num_skips = num_skip_slots(virtual_layers(cfg, looping=True))
        self.skip_weights = nn.Parameter(torch.ones(num_skips, cfg.model_dim))
        if cfg.skip_gates:  # zero-init: sigmoid(0) = 0.5, an even blend of stream and skip
            self.skip_gates = nn.Parameter(torch.zeros(num_skips, cfg.model_dim))
        if cfg.smear_gate:  # zero-init lambda: the identity at init
            self.smear_w = nn.Parameter(torch.zeros(GATE_INPUT_DIMS))
            self.smear_lambda = nn.Parameter(torch.zeros(1))
        if cfg.parallel_residual == "two_lane":  # per physical layer; looped repeats share them
            self.parallel_post_lambdas = nn.Parameter(torch.ones(cfg.num_layers, 2, 2))
            self.parallel_resid_lambdas = nn.Parameter(torch.full((cfg.num_layers, 2), 1.1))
        if cfg.ortho_init:
            self._orthogonal_init()
        if cfg.bigram_buckets:
            self.bigram = BigramHash(cfg.bigram_buckets, cfg.bigram_dim, cfg.model_dim)
        if cfg.ve_layers:
            kv_dim = cfg.num_kv_heads * (cfg.model_dim // cfg.num_heads)
            self.ve = ValueEmbedding(cfg.vocab_size, cfg.ve_dim, kv_dim)
        self.final_norm = RMSNorm()  # its output is the tied head's input (GPTQ hooks it)
        self.set_looping(cfg.num_loops > 0)

    def _orthogonal_init(self) -> None:
        """Orthogonal init for block matrices of at least 64 x 64; zero-init outputs stay zero."""
        zero_init = ("attn.proj.weight", "mlp.proj.weight")  # output projections start at zero
        for name, p in self.blocks.named_parameters():
            if p.ndim == 2 and min(p.shape) >= 64 and not name.endswith(zero_init):
                nn.init.orthogonal_(p, gain=1.0)

    def set_looping(self, active: bool) -> None:
        """Run the looped layout (active) or the plain one. A layout change is a different graph, so
        it lives in Python attributes (torch.compile guards on them and recompiles)."""
        cfg = self.config
        self.looping = bool(active) and cfg.num_loops > 0
        self.layout = virtual_layers(cfg, self.looping)
        self.num_encoder = len(self.layout) // 2
        # Parallel residuals start at the first virtual position on a layer >= parallel_start.
        starts = [pos for pos, layer in enumerate(self.layout) if layer >= cfg.parallel_start]
        self.parallel_from = (starts[0] if cfg.parallel_residual != "none" and starts
                              else len(self.layout))

    def set_qat(self, bits: int, clip_sigmas: float = 0.0) -> None:
        """Fake-quantize every block matrix to `bits` (0 = off) with a straight-through gradient;
        clip_sigmas 0 clips at each row's abs max, > 0 at clip_sigmas * row std (SDClip)."""
        for module in self.modules():
            if isinstance(module, QATState):
                module.set(bits, clip_sigmas)

    def smear(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """SmearGate (modded-nanogpt style, with the BOS fix of the best record):
        x_t += lambda * sigmoid(w . x_t[:12]) * x_{t-1} * [id_t != BOS]; never mixes across documents."""
        gate = torch.sigmoid(x[..., :GATE_INPUT_DIMS] @ self.smear_w.to(x.dtype))[..., None]
        prev = F.pad(x[:, :-1], (0, 0, 1, 0))  # x_{t-1}, zero before the first position
        not_bos = (idx != BOS_TOKEN_ID).to(x.dtype)[..., None]
        return x + self.smear_lambda.to(x.dtype) * gate * prev * not_bos

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """The normalised input stream x0: token (+ bigram) embedding, SmearGate, RMSNorm."""
        x = self.tok_emb(idx)
        if self.config.bigram_buckets:
            x = x + self.bigram(idx).to(x.dtype)
        if self.config.smear_gate:
            x = self.smear(x, idx)
        return rms_norm(x)

    def _add_skip(self, x: torch.Tensor, slot: int, skip: torch.Tensor) -> torch.Tensor:
        skip = self.skip_weights[slot].to(x.dtype) * skip
        if self.config.skip_gates:
            g = torch.sigmoid(self.skip_gates[slot]).to(x.dtype)
            return g * x + (1 - g) * skip
        return x + skip

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """Final hidden states (B, T, d) before the final norm.

        `x` is the residual stream, and lane0 once two lanes run (lane1 starts as its copy); U-Net
        skips are pushed from and added to it only.
        """
        x = self.embed(idx)
        x0 = x
        ve = self.ve(idx) if self.config.ve_layers else None
        lane1 = None
        skips = []
        for pos, layer in enumerate(self.layout):
            if pos >= self.num_encoder and skips:
                x = self._add_skip(x, pos - self.num_encoder, skips.pop())
            block = self.blocks[layer]
            if pos < self.parallel_from:
                x = block(x, x0, ve)
            elif self.config.parallel_residual == "gptj":
                x = block.parallel(x, x0, ve)
            else:
                lane1 = x if lane1 is None else lane1
                x, lane1 = block.two_lane(x, lane1, x0, self.parallel_post_lambdas[layer],
                                          self.parallel_resid_lambdas[layer], ve)
            if pos < self.num_encoder:
                skips.append(x)
        return x if lane1 is None else (x + lane1) / 2

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) in fp32 for token ids (B, T)."""
        x = self.hidden(idx)
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
