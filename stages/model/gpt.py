"""The GPT of the parameter-golf challenge, built only from `ModelConfig`.

    x = rms_norm(tok_emb[ids]); x0 = x
    block: x = resid_mix[0] * x + resid_mix[1] * x0
           x = x + attn_scale * attn(rms_norm(x))      # q,k rms-normed, RoPE, per-head q_gain, GQA
           x = x + mlp_scale * mlp(rms_norm(x))        # down(relu(up(x))^2)
    U-Net: the first half of the layers save their outputs; each later layer first adds
           skip_weights[j] * (the j-th saved output from the end)
    logits = softcap * tanh((rms_norm(x) @ tok_emb.T) / softcap)          # tied embedding

Tensor names are the canonical ones used in every saved artifact (and match the public baseline
`train_gpt.py`, so its checkpoints map one to one). Output projections start at zero, so every block
starts as the identity. The full preset (9 x 512, vocab 1024) has 17,059,912 parameters.

The features of the later records (docs/techniques.md) are `ModelConfig` switches, all off by
default: with none set this is exactly the baseline. Input features live in features.py, the layer
schedule (loops, U-Net skips, parallel lanes) is computed once as data in plan.py, and late QAT's
fake quantiser in qat.py. Optional parameters keep their canonical names on the module that uses
them and are None when their feature is off (as torch does for a missing bias). Every module
declares the role of each of its parameters (roles.py).

Whatever the layout, the state_dict holds each physical tensor once under its canonical name (no
loop or lane copies, no buffers).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from stages.errors import GolfError
from stages.data.shards import BOS_ID
from stages.model.attention import CausalSelfAttention, Documents, rms_norm
from stages.model.config import ModelConfig
from stages.model.features import (GATE_INPUT_DIMS, BigramHash, ValueEmbedding, smear,
                                   smear_blend)
from stages.model.plan import LayerPlan, layer_plan, num_skip_slots, virtual_layers
from stages.model.qat import QATLinear, QATState
from stages.model.roles import CONTROL, Role, matrix, role_map, table


class RMSNorm(nn.Module):
    """Parameterless RMSNorm as a module, where a hook needs to see its output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x)


class MLP(nn.Module):
    """down(act(up(x))): relu^2, LeakyReLU(0.5)^2, or SwiGLU with a second input projection."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = cfg.mlp_mult * cfg.model_dim
        self.activation = cfg.activation
        self.fc = QATLinear(cfg.model_dim, hidden)
        self.gate = QATLinear(cfg.model_dim, hidden) if cfg.activation == "swiglu" else None
        self.proj = QATLinear(hidden, cfg.model_dim)
        nn.init.zeros_(self.proj.weight)

    def roles(self) -> dict[str, Role]:
        roles = {"fc.weight": matrix("mlp_up"), "proj.weight": matrix("mlp_down")}
        return roles | ({"gate.weight": matrix()} if self.gate is not None else {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)  # (B, T, hidden)
        if self.activation == "relu2":
            h = F.relu(h).square()
        elif self.activation == "leaky_relu2":
            h = F.leaky_relu(h, negative_slope=0.5).square()
        else:  # swiglu
            h = F.silu(self.gate(x)) * h
        return self.proj(h)


class Block(nn.Module):
    """One physical layer. The plan runs it sequentially (`forward`), GPT-J parallel (`parallel`)
    or on two lanes (`two_lane`); the weights are the same."""

    def __init__(self, cfg: ModelConfig, layer: int = 0):
        super().__init__()
        self.attn = CausalSelfAttention(cfg, xsa=layer >= cfg.num_layers - cfg.xsa_last_n,
                                        value_embed=layer in cfg.ve_layers)
        self.mlp = MLP(cfg)
        self.norm_scale = 1.0 / (layer + 1) ** 0.5 if cfg.ln_scale else 1.0
        self.attn_scale = nn.Parameter(torch.ones(cfg.model_dim))
        self.mlp_scale = nn.Parameter(torch.ones(cfg.model_dim))
        self.resid_mix = nn.Parameter(torch.stack([torch.ones(cfg.model_dim),
                                                   torch.zeros(cfg.model_dim)]))  # (2, d)

    def roles(self) -> dict[str, Role]:
        return {"attn_scale": CONTROL, "mlp_scale": CONTROL, "resid_mix": CONTROL}

    def mix(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        mix = self.resid_mix.to(x.dtype)
        return mix[0] * x + mix[1] * x0

    def attend(self, x: torch.Tensor, ve: torch.Tensor | None,
               docs: Documents | None = None) -> torch.Tensor:
        return self.attn_scale.to(x.dtype) * self.attn(rms_norm(x) * self.norm_scale, ve, docs)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp_scale.to(x.dtype) * self.mlp(rms_norm(x) * self.norm_scale)

    def forward(self, x: torch.Tensor, x0: torch.Tensor,
                ve: torch.Tensor | None = None, docs: Documents | None = None) -> torch.Tensor:
        x = self.mix(x, x0)
        x = x + self.attend(x, ve, docs)
        return x + self.feed_forward(x)

    def parallel(self, x: torch.Tensor, x0: torch.Tensor,
                 ve: torch.Tensor | None = None, docs: Documents | None = None) -> torch.Tensor:
        """GPT-J style: attention and MLP both read the same input, x + a*Attn(N x) + s*MLP(N x)."""
        x = self.mix(x, x0)
        return x + self.attend(x, ve, docs) + self.feed_forward(x)

    def two_lane(self, lane0: torch.Tensor, lane1: torch.Tensor, x0: torch.Tensor,
                 post: torch.Tensor, resid: torch.Tensor, ve: torch.Tensor | None = None,
                 docs: Documents | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Two residual lanes (the best record's `_parallel_block`): attention reads lane0
        resid-mixed with x0, the MLP reads lane1 as it was before this layer; each lane keeps
        resid[lane] of itself, *unmixed* (the mix feeds attention only), and takes post[source,
        lane] of each output (source 0 = attention, 1 = MLP)."""
        a, m = self.attend(self.mix(lane0, x0), ve, docs), self.feed_forward(lane1)
        post, resid = post.to(lane0.dtype), resid.to(lane0.dtype)
        new0 = resid[0] * lane0 + post[0, 0] * a + post[1, 0] * m
        new1 = resid[1] * lane1 + post[0, 1] * a + post[1, 1] * m
        return new0, new1


class GPT(nn.Module):
    """Token embedding, the blocks run by the layer plan, final norm, tied head with softcap."""

    HEAD_WEIGHT = "tok_emb.weight"  # the tied output head: its input is final_norm's output

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size is None:
            raise GolfError("model.vocab_size is not set: it comes from the data's tokenizer "
                            "(golf train fills it in)")
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.model_dim)
        nn.init.normal_(self.tok_emb.weight, std=cfg.tied_embed_init_std)
        self.blocks = nn.ModuleList(Block(cfg, layer) for layer in range(cfg.num_layers))
        # Skip slots for the longest layout (the looped one); the plain layout uses the first ones.
        num_skips = num_skip_slots(virtual_layers(cfg, looping=True))
        self.skip_weights = nn.Parameter(torch.ones(num_skips, cfg.model_dim))
        # Zero-init gates: sigmoid(0) = 0.5, an even blend of stream and skip.
        self.skip_gates = nn.Parameter(torch.zeros(num_skips, cfg.model_dim)) \
            if cfg.skip_gates else None
        # SmearGate, lambda style zero-init: the identity at init; blend style: g = 0.5 at init.
        lam = cfg.smear_gate and cfg.smear_gate_style == "lambda"
        self.smear_w = nn.Parameter(torch.zeros(GATE_INPUT_DIMS)) if lam else None
        self.smear_lambda = nn.Parameter(torch.zeros(1)) if lam else None
        self.smear_blend = nn.Parameter(torch.zeros(cfg.model_dim)) \
            if cfg.smear_gate and not lam else None
        two_lane = cfg.parallel_residual == "two_lane"  # per physical layer; loops share them
        self.parallel_post_lambdas = nn.Parameter(torch.ones(cfg.num_layers, 2, 2)) \
            if two_lane else None  # (layer, source: attn/mlp, lane)
        self.parallel_resid_lambdas = nn.Parameter(torch.full((cfg.num_layers, 2), 1.1)) \
            if two_lane else None  # (layer, lane)
        if cfg.ortho_init:
            self._orthogonal_init()
        # The input features' projections are orthogonal x 1/sqrt(2L) whether or not ortho_init
        # is set: every record that has them initialised them so (features.py).
        self.bigram = BigramHash(cfg.bigram_buckets, cfg.bigram_dim, cfg.model_dim,
                                 cfg.num_layers) if cfg.bigram_buckets else None
        kv_dim = cfg.num_kv_heads * cfg.head_dim
        self.ve = ValueEmbedding(cfg.vocab_size, cfg.ve_dim, kv_dim, cfg.num_layers) \
            if cfg.ve_layers else None
        self.final_norm = RMSNorm()  # its output is the tied head's input (GPTQ hooks it)
        self.set_looping(cfg.num_loops > 0)
        self.doc_attention = False

    def roles(self) -> dict[str, Role]:
        roles = {self.HEAD_WEIGHT: table("embedding"), "skip_weights": CONTROL}
        optional = ("skip_gates", "smear_w", "smear_lambda", "smear_blend",
                    "parallel_post_lambdas", "parallel_resid_lambdas")
        return roles | {name: CONTROL for name in optional if getattr(self, name) is not None}

    def roles_by_name(self) -> dict[str, Role]:
        """The role of every parameter, by canonical name."""
        return role_map(self)

    def _orthogonal_init(self) -> None:
        """Orthogonal init for block matrices of at least 64 x 64; zero-init outputs stay zero."""
        roles = role_map(self.blocks)
        for name, p in self.blocks.named_parameters():
            role = roles[name]
            if role.kind == "matrix" and min(p.shape) >= 64 and \
                    role.group not in ("attn_out", "mlp_down"):
                nn.init.orthogonal_(p, gain=1.0)

    def set_looping(self, active: bool) -> None:
        """Run the looped layout (active) or the plain one. A layout change is a different graph, so
        it lives in a Python attribute (torch.compile guards on it and recompiles)."""
        self.plan: LayerPlan = layer_plan(self.config, active)

    def set_document_attention(self, active: bool) -> None:
        """In training mode, attend only within documents (train.doc_attention). A switch of the
        training run, not of the model: eval mode and every model built from an artifact attend
        causally across documents, as the scorers expect."""
        self.doc_attention = active

    @property
    def looping(self) -> bool:
        return self.plan.looping

    def set_qat(self, bits: int, clip_sigmas: float = 0.0) -> None:
        """Fake-quantize every block matrix to `bits` (0 = off) with a straight-through gradient;
        clip_sigmas 0 clips at each row's abs max, > 0 at clip_sigmas * row std (SDClip)."""
        for module in self.modules():
            if isinstance(module, QATState):
                module.set(bits, clip_sigmas)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """The normalised input stream x0 (B, T, d): token (+ bigram) embedding, SmearGate, RMSNorm
        (the blend SmearGate comes after the norm, as in its record)."""
        x = self.tok_emb(idx)
        if self.bigram is not None:
            x = x + self.bigram(idx).to(x.dtype)
        if self.smear_w is not None:
            x = smear(x, idx, self.smear_w, self.smear_lambda)
        x = rms_norm(x)
        if self.smear_blend is not None:
            x = smear_blend(x, idx, self.smear_blend)
        return x

    def _add_skip(self, x: torch.Tensor, slot: int, skip: torch.Tensor) -> torch.Tensor:
        skip = self.skip_weights[slot].to(x.dtype) * skip
        if self.skip_gates is not None:
            g = torch.sigmoid(self.skip_gates[slot]).to(x.dtype)
            return g * x + (1 - g) * skip
        return x + skip

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """Final hidden states (B, T, d) before the final norm, by walking the layer plan.

        `x` is the residual stream, and lane0 once two lanes run. Both lanes start as the stream
        as it reaches the first two-lane position, before that position's U-Net skip, which (like
        every later one) is added to lane0 only; skips are saved from `x`.
        """
        x = self.embed(idx)
        x0 = x
        ve = self.ve(idx) if self.ve is not None else None
        docs = Documents.of(idx, BOS_ID) if self.doc_attention and self.training else None
        lane1 = None
        saved: dict[int, torch.Tensor] = {}
        for step in self.plan.steps:
            if step.mode == "two_lane" and lane1 is None:
                lane1 = x
            if step.skip_from is not None:
                x = self._add_skip(x, step.skip_slot, saved.pop(step.skip_from))
            block = self.blocks[step.layer]
            if step.mode == "sequential":
                x = block(x, x0, ve, docs)
            elif step.mode == "gptj":
                x = block.parallel(x, x0, ve, docs)
            else:
                x, lane1 = block.two_lane(x, lane1, x0, self.parallel_post_lambdas[step.layer],
                                          self.parallel_resid_lambdas[step.layer], ve, docs)
            if step.saves:
                saved[step.position] = x
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


def roles_for(cfg: ModelConfig) -> dict[str, Role]:
    """The role of every parameter of a model of `cfg` (built on the meta device: no memory)."""
    with torch.device("meta"):
        return GPT(cfg).roles_by_name()


@functools.lru_cache(maxsize=16)
def parameter_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of a model of `cfg` (meta device: no memory, whatever the
    size), what an artifact of `cfg` must hold."""
    with torch.device("meta"):
        return {name: tuple(t.shape) for name, t in GPT(cfg).state_dict().items()}


def build_model(cfg: ModelConfig, state: dict[str, torch.Tensor] | None = None,
                device: str | torch.device = "cpu") -> GPT:
    """A GPT for `cfg`, optionally loaded (strictly: names and shapes must match) from `state`."""
    model = GPT(cfg)
    if state is not None:
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.to(device)
