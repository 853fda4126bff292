"""`ModelConfig`: the `model` section of params.yaml, the GPT's shape and feature switches.

The defaults are the challenge's baseline (9 layers x 512, vocab from the tokenizer); every feature
of the later records is off by default. What each switch does: docs/techniques.md.

Artifact format 1 stores the config in its first layout, where the attention gate was two exclusive
booleans (`attn_out_gate`, `sparse_attn_gate` + `sparse_attn_gate_scale`); `to_metadata` and
`from_metadata` translate, so every artifact ever written still loads and new ones keep the format.
`smear_gate_style` and `rope_bf16` are stored only when they are not the default, so artifacts of
configs without them are byte for byte what they were before they existed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from stages.params import ConfigError, Range, build, check, param, validate

Activation = Literal["relu2", "leaky_relu2", "swiglu"]
AttnGate = Literal["none", "out", "sparse"]
Residual = Literal["none", "gptj", "two_lane"]
SmearStyle = Literal["lambda", "blend"]
Count = Annotated[int, Range(0)]
Positive = Annotated[int, Range(1)]


@dataclass(frozen=True)
class ModelConfig:
    """Shape and features of the GPT (stages/model/gpt.py)."""

    SECTION: ClassVar[str] = "model"
    RENAMED: ClassVar[dict[str, str]] = {
        "attn_out_gate": "set model.attn_gate: out",
        "sparse_attn_gate": "set model.attn_gate: sparse",
        "sparse_attn_gate_scale": "set model.attn_gate_scale",
    }

    vocab_size: Annotated[int, Range(1, 65536)] | None = param(
        None, "vocabulary size; null = the data's tokenizer's (golf train fills it in)")
    num_layers: Positive = param(9, "transformer blocks (physical layers)")
    model_dim: Positive = param(512, "width of the residual stream")
    num_heads: Positive = param(8, "attention heads; model_dim / num_heads must be even (RoPE)")
    num_kv_heads: Positive = param(4, "key/value heads (grouped-query attention); divide num_heads")
    mlp_mult: Positive = param(2, "MLP hidden width, in multiples of model_dim")
    tied_embed_init_std: Annotated[float, Range(0)] = param(
        0.005, "std of the token embedding at init (it is also the output head)")
    logit_softcap: Annotated[float, Range(0, lo_open=True)] = param(
        30.0, "logits = softcap * tanh(logits / softcap)")
    rope_base: Annotated[float, Range(0, lo_open=True)] = param(10000.0, "RoPE frequency base")
    qk_gain_init: float = param(1.5, "initial per-head gain on the queries after QK-RMSNorm")
    activation: Activation = param(
        "relu2", "MLP nonlinearity: relu(x)^2, leaky_relu(x, 0.5)^2, or SwiGLU")
    rope_dims: Count = param(0, "rotated dims per head; 0 = all, fewer = partial RoPE")
    ln_scale: bool = param(False, "scale each sublayer's normalised input by 1/sqrt(layer + 1)")
    xsa_last_n: Count = param(0, "exclusive self-attention (own value removed) on the last N layers")
    skip_gates: bool = param(False, "sigmoid-gated U-Net skips (a blend of stream and skip)")
    smear_gate: bool = param(
        False, "add a gated share of the previous token's embedding (never across a BOS)")
    smear_gate_style: SmearStyle = param(
        "lambda", "SmearGate: lambda = x + lam sigmoid(W x[:12]) x_prev before the embedding norm "
                  "(the best record's; identity at init), blend = (1 - g) x + g x_prev with a "
                  "per-channel g = sigmoid(gate) after it (PR #401's; g = 0.5 at init)")
    attn_gate: AttnGate = param(
        "none", "per-head attention output gate: out = 2 sigmoid(W x[:12]), "
                "sparse = sigmoid(attn_gate_scale W x[:12])")
    attn_gate_scale: Annotated[float, Range(0, lo_open=True)] = param(
        0.5, "input scale of the sparse attention gate")
    ortho_init: bool = param(False, "orthogonal init of the block matrices (outputs stay zero)")
    bigram_buckets: Count = param(
        0, "BigramHash table rows (0 = off, else >= 2): a hashed (previous, current) token pair "
           "embedding added to the input")
    bigram_dim: Positive = param(128, "BigramHash embedding width")
    ve_layers: tuple[Count, ...] = param((), "layers whose values get the shared value embedding")
    ve_dim: Positive = param(128, "value embedding width")
    loop_start: Count = param(0, "depth recurrence: first looped layer")
    loop_end: Count = param(0, "depth recurrence: last looped layer (inclusive)")
    num_loops: Count = param(0, "extra passes over loop_start..loop_end, weights shared; 0 = off")
    parallel_residual: Residual = param(
        "none", "from parallel_start on: gptj = attention and MLP read the same input, "
                "two_lane = separate attention and MLP lanes with learned routing")
    parallel_start: Count = param(0, "first layer of the parallel residual part")
    rope_ntk_train_len: Count = param(
        0, "NTK-scale the RoPE base for sequences longer than this (0 = off)")
    rope_bf16: bool = param(
        False, "RoPE positions, frequencies and angles in bf16, as the public baseline's "
               "train_gpt.py computes them (its model.bfloat16() casts the inv_freq buffer): "
               "positions round to 8 significant bits (257 -> 256, 1023 -> 1024)")

    def __post_init__(self) -> None:
        validate(self)
        check(self.model_dim % self.num_heads == 0,
              f"model.model_dim ({self.model_dim}) must be divisible by model.num_heads "
              f"({self.num_heads})")
        check(self.num_heads % self.num_kv_heads == 0,
              f"model.num_heads ({self.num_heads}) must be divisible by model.num_kv_heads "
              f"({self.num_kv_heads})")
        head_dim = self.model_dim // self.num_heads
        check(head_dim % 2 == 0,
              f"model.model_dim / model.num_heads must be even for RoPE, got {head_dim}")
        check(self.rope_dims <= head_dim and self.rope_dims % 2 == 0,
              f"model.rope_dims must be even and in [0, {head_dim}] (0 = all), got {self.rope_dims}")
        check(self.xsa_last_n <= self.num_layers,
              f"model.xsa_last_n must be in [0, {self.num_layers}], got {self.xsa_last_n}")
        self._check_layer_features()

    def _check_layer_features(self) -> None:
        last = self.num_layers - 1
        check(self.bigram_buckets != 1,
              f"model.bigram_buckets must be 0 (off) or >= 2, got {self.bigram_buckets}")
        check(all(i <= last for i in self.ve_layers) and
              len(set(self.ve_layers)) == len(self.ve_layers),
              f"model.ve_layers must be distinct layer indices in [0, {last}], got {self.ve_layers}")
        check(self.loop_start <= self.loop_end <= last,
              f"model.loop_start/loop_end must satisfy 0 <= loop_start <= loop_end <= {last}, "
              f"got {self.loop_start}..{self.loop_end}")
        check(self.parallel_start <= last,
              f"model.parallel_start must be in [0, {last}], got {self.parallel_start}")
        rotated = self.rope_dims or self.model_dim // self.num_heads
        check(self.rope_ntk_train_len == 0 or rotated > 2,
              f"model.rope_ntk_train_len needs more than 2 rotated dims, got {rotated}")

    @property
    def head_dim(self) -> int:
        return self.model_dim // self.num_heads

    def with_vocab(self, tokenizer_vocab: int, tokenizer: str) -> ModelConfig:
        """This config with the data's vocabulary filled in; a different explicit value is an error."""
        if self.vocab_size is None:
            return dataclasses.replace(self, vocab_size=tokenizer_vocab)
        if self.vocab_size != tokenizer_vocab:
            raise ConfigError(f"model.vocab_size is {self.vocab_size} but {tokenizer} has "
                              f"{tokenizer_vocab} pieces; set model.vocab_size={tokenizer_vocab} "
                              f"or leave it out")
        return self

    def to_metadata(self) -> dict[str, Any]:
        """The config in artifact format 1's layout (see the module docstring)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        gate, scale = d.pop("attn_gate"), d.pop("attn_gate_scale")
        d.update(attn_out_gate=gate == "out", sparse_attn_gate=gate == "sparse",
                 sparse_attn_gate_scale=scale)
        if d["smear_gate_style"] == "lambda":  # the default, left out: every artifact written
            del d["smear_gate_style"]           # before the key existed stays byte-identical
        if not d["rope_bf16"]:  # likewise
            del d["rope_bf16"]
        return d

    @classmethod
    def from_metadata(cls, d: dict[str, Any]) -> ModelConfig:
        """Inverse of `to_metadata`."""
        d = dict(d)
        out_gate, sparse = d.pop("attn_out_gate", False), d.pop("sparse_attn_gate", False)
        if "sparse_attn_gate_scale" in d:
            d["attn_gate_scale"] = d.pop("sparse_attn_gate_scale")
        if out_gate or sparse:
            d["attn_gate"] = "out" if out_gate else "sparse"
        return build(cls, d)
