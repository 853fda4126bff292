"""Plain-data configuration: one frozen dataclass per `params.yaml` section.

Values are type-checked when they are read (from a params file or a `--set key=value` override), and
range-checked in `__post_init__`, with messages that name the key the way the user writes it
(`train.warmdown_frac must be in [0, 1], got 1.3`). Stage functions receive these objects and never
read files or the environment themselves.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from stages.errors import GolfError


class ConfigError(GolfError):
    """A params value or override that does not fit the schema."""


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the baseline GPT of the challenge (spec §2.1). The full preset is 9 layers x 512."""

    vocab_size: int = 1024
    num_layers: int = 9
    model_dim: int = 512
    num_heads: int = 8
    num_kv_heads: int = 4
    mlp_mult: int = 2
    tied_embed_init_std: float = 0.005
    logit_softcap: float = 30.0
    rope_base: float = 10000.0
    qk_gain_init: float = 1.5
    # Features of the record stacks (spec §2.3); the defaults are the baseline's behaviour.
    activation: str = "relu2"  # relu2 | leaky_relu2 (LeakyReLU(0.5) squared) | swiglu
    rope_dims: int = 0  # rotated dims per head; 0 = all (partial RoPE when smaller)
    ln_scale: bool = False  # scale each sublayer's normalized input by 1/sqrt(layer + 1)
    xsa_last_n: int = 0  # exclusive self-attention on the last N layers
    skip_gates: bool = False  # sigmoid-gated U-Net skips (lerp between skip and stream)
    smear_gate: bool = False  # input-dependent blend with the previous token, masked at BOS
    attn_out_gate: bool = False  # per-head output gate 2*sigmoid(W x[:12]), identity at init
    ortho_init: bool = False  # orthogonal init of the large matrices (outputs stay zero)
    # Per-head gate sigmoid(scale * W x[:12]) (SparseAttnGate); excludes attn_out_gate.
    sparse_attn_gate: bool = False
    sparse_attn_gate_scale: float = 0.5
    bigram_buckets: int = 0  # BigramHash table rows K (0 = off); hash of (previous, current) token
    bigram_dim: int = 128
    ve_layers: tuple[int, ...] = ()  # value embeddings in these layers (a tuple: configs hash)
    ve_dim: int = 128
    # Depth recurrence: physical layers loop_start..loop_end (inclusive) run num_loops extra times.
    loop_start: int = 0
    loop_end: int = 0
    num_loops: int = 0  # 0 = off
    parallel_residual: str = "none"  # none | gptj | two_lane
    parallel_start: int = 0  # first physical layer of the parallel part
    rope_ntk_train_len: int = 0  # NTK-scale the RoPE base at lengths above this (0 = off)

    def __post_init__(self) -> None:
        for key in ("vocab_size", "num_layers", "model_dim", "num_heads", "num_kv_heads", "mlp_mult"):
            _check(getattr(self, key) >= 1, f"model.{key} must be >= 1, got {getattr(self, key)}")
        _check(self.vocab_size <= 65536, f"model.vocab_size must fit uint16 shards (<= 65536), "
               f"got {self.vocab_size}")
        _check(self.model_dim % self.num_heads == 0,
               f"model.model_dim ({self.model_dim}) must be divisible by model.num_heads "
               f"({self.num_heads})")
        _check(self.num_heads % self.num_kv_heads == 0,
               f"model.num_heads ({self.num_heads}) must be divisible by model.num_kv_heads "
               f"({self.num_kv_heads})")
        _check((self.model_dim // self.num_heads) % 2 == 0,
               f"model.model_dim / model.num_heads must be even for RoPE, got "
               f"{self.model_dim // self.num_heads}")
        _check(self.logit_softcap > 0, f"model.logit_softcap must be > 0, got {self.logit_softcap}")
        _check(self.activation in ("relu2", "leaky_relu2", "swiglu"),
               f"model.activation must be one of relu2, leaky_relu2, swiglu; got {self.activation!r}")
        head_dim = self.model_dim // self.num_heads
        _check(0 <= self.rope_dims <= head_dim and self.rope_dims % 2 == 0,
               f"model.rope_dims must be even and in [0, {head_dim}] (0 = all), got {self.rope_dims}")
        _check(0 <= self.xsa_last_n <= self.num_layers,
               f"model.xsa_last_n must be in [0, {self.num_layers}], got {self.xsa_last_n}")
        self._check_record_features()

    def _check_record_features(self) -> None:
        """Ranges of the feature switches added for the later record stacks."""
        # A list given in code becomes a tuple, so the frozen config stays hashable and equal to
        # the same config read from params.yaml.
        object.__setattr__(self, "ve_layers", tuple(self.ve_layers))
        last = self.num_layers - 1
        _check(not (self.attn_out_gate and self.sparse_attn_gate),
               "model.attn_out_gate and model.sparse_attn_gate are exclusive; set at most one")
        _check(self.sparse_attn_gate_scale > 0,
               f"model.sparse_attn_gate_scale must be > 0, got {self.sparse_attn_gate_scale}")
        _check(self.bigram_buckets == 0 or self.bigram_buckets >= 2,
               f"model.bigram_buckets must be 0 (off) or >= 2, got {self.bigram_buckets}")
        for key in ("bigram_dim", "ve_dim"):
            _check(getattr(self, key) >= 1, f"model.{key} must be >= 1, got {getattr(self, key)}")
        _check(all(0 <= i <= last for i in self.ve_layers) and
               len(set(self.ve_layers)) == len(self.ve_layers),
               f"model.ve_layers must be distinct layer indices in [0, {last}], got {self.ve_layers}")
        _check(self.num_loops >= 0, f"model.num_loops must be >= 0, got {self.num_loops}")
        _check(0 <= self.loop_start <= self.loop_end <= last,
               f"model.loop_start/loop_end must satisfy 0 <= loop_start <= loop_end <= {last}, "
               f"got {self.loop_start}..{self.loop_end}")
        _check(self.parallel_residual in ("none", "gptj", "two_lane"),
               f"model.parallel_residual must be one of none, gptj, two_lane; "
               f"got {self.parallel_residual!r}")
        _check(0 <= self.parallel_start <= last,
               f"model.parallel_start must be in [0, {last}], got {self.parallel_start}")
        _check(self.rope_ntk_train_len >= 0,
               f"model.rope_ntk_train_len must be >= 0, got {self.rope_ntk_train_len}")
        rotated = self.rope_dims or self.model_dim // self.num_heads
        _check(self.rope_ntk_train_len == 0 or rotated > 2,
               f"model.rope_ntk_train_len needs more than 2 rotated dims, got {rotated}")


@dataclass(frozen=True)
class TokenizeParams:
    """How `golf tokenize` turns a corpus into a tokenizer and token shards."""

    vocab_size: int = 1024
    # A document goes to validation when its SHA-256 falls in this fraction of the hash space, so the
    # split depends only on the text: the same text can never land on both sides.
    val_fraction: float = 0.1
    max_docs: int = 0  # 0 = every document of the corpus
    shard_tokens: int = 100_000_000  # tokens per shard, as the official exporter
    character_coverage: float = 0.9995

    def __post_init__(self) -> None:
        _check(self.vocab_size >= 260,
               f"tokenize.vocab_size must be >= 260 (4 control ids + 256 byte-fallback ids), "
               f"got {self.vocab_size}")
        _check(self.vocab_size <= 65536, f"tokenize.vocab_size must be <= 65536, got {self.vocab_size}")
        _check(0.0 < self.val_fraction < 1.0,
               f"tokenize.val_fraction must be in (0, 1), got {self.val_fraction}")
        _check(self.max_docs >= 0, f"tokenize.max_docs must be >= 0, got {self.max_docs}")
        _check(self.shard_tokens >= 1, f"tokenize.shard_tokens must be >= 1, got {self.shard_tokens}")
        _check(0.9 <= self.character_coverage <= 1.0,
               f"tokenize.character_coverage must be in [0.9, 1], got {self.character_coverage}")


@dataclass(frozen=True)
class TrainParams:
    """Optimizer, schedule and budget of `golf train` (baseline defaults from spec §3)."""

    seed: int = 1337
    max_steps: int = 20000  # step cap, in addition to the wall-clock cap
    max_wallclock_seconds: float = 600.0  # 0 = no wall-clock cap
    batch_tokens: int = 524288
    seq_len: int = 1024
    grad_accum_steps: int = 1  # the batch is split into this many micro-batches
    # Flat LR, then linear decay over the last `warmdown_frac` of the run, down to `min_lr_frac` of
    # the peak. Progress is steps/max_steps ('steps': deterministic, needed for exact resume),
    # elapsed/max_wallclock_seconds ('wallclock', the records') or the larger of the two ('auto').
    # Either way the run stops at whichever cap comes first.
    schedule: str = "auto"  # auto | steps | wallclock
    warmdown_frac: float = 0.2
    min_lr_frac: float = 0.0
    matrix_lr: float = 0.04
    embed_lr: float = 0.05
    scalar_lr: float = 0.04
    muon_momentum: float = 0.95
    muon_momentum_warmup_start: float = 0.85
    muon_momentum_warmup_steps: int = 500
    muon_backend_steps: int = 5
    muon_ns: str = "classic"  # Newton-Schulz coefficients: classic | polar_express
    muon_row_normalize: bool = False  # MuonEq-R: row-normalise the update before Newton-Schulz
    muon_wd: float = 0.0  # decoupled weight decay of the matrices: W <- W * (1 - lr_t * muon_wd)
    embed_wd: float = 0.0  # AdamW decoupled weight decay of the embedding
    scalar_wd: float = 0.0  # AdamW decoupled weight decay of the scalar/control parameters
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    grad_clip_norm: float = 0.0  # 0 = off
    ema_decay: float = 0.997
    # SWA snapshots: every `swa_every` steps once the LR scale is below `swa_lr_scale`, each written
    # as its own checkpoint (RUN_DIR/swa/) for `golf average` ("tight SWA"). 0 = off.
    swa_every: int = 0
    swa_lr_scale: float = 0.5
    # Late QAT: once the LR scale falls below `qat_lr_scale`, the model fake-quantizes its matrices
    # to `qat_bits` (STE) for the rest of the run; clip per row at the abs max, or at
    # `qat_clip_sigmas` standard deviations when > 0. 0 bits = off.
    qat_bits: int = 0
    qat_lr_scale: float = 0.15
    qat_clip_sigmas: float = 0.0
    # Depth recurrence (models with model.num_loops > 0): looped layers run from this fraction of
    # the schedule's progress on; 0 = looped from the start.
    loop_enable_at: float = 0.0
    val_every: int = 0  # score the validation split every N steps (metrics and log only); 0 = off
    checkpoint_every: int = 0  # write resumable state to RUN_DIR/resume/ every N steps; 0 = off
    device: str = "auto"  # auto | cpu | cuda
    autocast: str | bool = "auto"  # auto (bf16 wherever it is faster) | bf16 | off
    # torch.compile of the loss: auto = on with CUDA, off on CPU (a cold CPU compile takes minutes).
    # YAML reads a bare on/off as a boolean: accepted and normalised to "on"/"off" (for autocast,
    # "bf16"/"off").
    compile: str | bool = "auto"
    log_every: int = 10

    def __post_init__(self) -> None:
        _check(self.max_steps >= 1, f"train.max_steps must be >= 1, got {self.max_steps}")
        _check(self.max_wallclock_seconds >= 0,
               f"train.max_wallclock_seconds must be >= 0, got {self.max_wallclock_seconds}")
        _check(self.seq_len >= 2, f"train.seq_len must be >= 2, got {self.seq_len}")
        _check(self.batch_tokens >= self.seq_len and self.batch_tokens % self.seq_len == 0,
               f"train.batch_tokens ({self.batch_tokens}) must be a positive multiple of "
               f"train.seq_len ({self.seq_len})")
        _check(self.grad_accum_steps >= 1 and
               (self.batch_tokens // self.seq_len) % self.grad_accum_steps == 0,
               f"train.grad_accum_steps ({self.grad_accum_steps}) must divide the "
               f"{self.batch_tokens // self.seq_len} sequences of a batch")
        _check(0.0 <= self.warmdown_frac <= 1.0,
               f"train.warmdown_frac must be in [0, 1], got {self.warmdown_frac}")
        _check(0.0 <= self.min_lr_frac <= 1.0,
               f"train.min_lr_frac must be in [0, 1], got {self.min_lr_frac}")
        _check(0.0 <= self.ema_decay < 1.0, f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        for key in ("matrix_lr", "embed_lr", "scalar_lr", "grad_clip_norm"):
            _check(getattr(self, key) >= 0, f"train.{key} must be >= 0, got {getattr(self, key)}")
        _check(self.device in ("auto", "cpu", "cuda"),
               f"train.device must be one of auto, cpu, cuda; got {self.device!r}")
        if isinstance(self.autocast, bool):  # YAML reads a bare off/on as a boolean
            object.__setattr__(self, "autocast", "bf16" if self.autocast else "off")
        _check(self.autocast in ("auto", "bf16", "off"),
               f"train.autocast must be one of auto, bf16, off; got {self.autocast!r}")
        if isinstance(self.compile, bool):
            object.__setattr__(self, "compile", "on" if self.compile else "off")
        _check(self.compile in ("auto", "on", "off"),
               f"train.compile must be one of auto, on, off; got {self.compile!r}")
        _check(self.log_every >= 1, f"train.log_every must be >= 1, got {self.log_every}")
        _check(self.swa_every >= 0, f"train.swa_every must be >= 0, got {self.swa_every}")
        _check(0.0 < self.swa_lr_scale <= 1.0,
               f"train.swa_lr_scale must be in (0, 1], got {self.swa_lr_scale}")
        self._check_record_options()

    def _check_record_options(self) -> None:
        """Range checks of the record-stack options (schedule, Muon variants, QAT, looping...)."""
        _check(self.schedule in ("auto", "steps", "wallclock"),
               f"train.schedule must be one of auto, steps, wallclock; got {self.schedule!r}")
        _check(self.schedule != "wallclock" or self.max_wallclock_seconds > 0,
               "train.schedule=wallclock needs train.max_wallclock_seconds > 0")
        _check(self.muon_ns in ("classic", "polar_express"),
               f"train.muon_ns must be one of classic, polar_express; got {self.muon_ns!r}")
        for key in ("muon_wd", "embed_wd", "scalar_wd", "qat_clip_sigmas"):
            _check(getattr(self, key) >= 0, f"train.{key} must be >= 0, got {getattr(self, key)}")
        _check(self.qat_bits == 0 or 2 <= self.qat_bits <= 8,
               f"train.qat_bits must be 0 (off) or in [2, 8], got {self.qat_bits}")
        _check(0.0 < self.qat_lr_scale <= 1.0,
               f"train.qat_lr_scale must be in (0, 1], got {self.qat_lr_scale}")
        _check(0.0 <= self.loop_enable_at < 1.0,
               f"train.loop_enable_at must be in [0, 1), got {self.loop_enable_at}")
        for key in ("val_every", "checkpoint_every"):
            _check(getattr(self, key) >= 0, f"train.{key} must be >= 0, got {getattr(self, key)}")


@dataclass(frozen=True)
class AverageParams:
    """`golf average`: empty weights = uniform; otherwise one weight per input, normalised to sum 1."""

    weights: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check(all(w >= 0 for w in self.weights), f"average.weights must be >= 0, got {self.weights}")
        _check(not self.weights or sum(self.weights) > 0, "average.weights must not all be zero")


# Tensor groups by role (stages/quant/groups.py maps canonical names onto them).
TENSOR_GROUPS = ("embedding", "attn_q", "attn_k", "attn_v", "attn_out", "mlp_up", "mlp_down", "other")


@dataclass(frozen=True)
class QuantizeParams:
    """`golf quantize`: which solver (`method`) and clip rule (`grid`) from the registries.

    Bits and SDClip multipliers can differ per tensor group (`group_bits`, `group_clip_sigmas`,
    keyed by TENSOR_GROUPS); groups not named use `bits` and `clip_sigmas`.
    """

    method: str = "rtn"
    grid: str = "percentile"
    bits: int = 8
    group_bits: dict[str, int] = field(default_factory=dict)
    clip_percentile: float = 99.99984  # the baseline's per-row clip quantile, in percent
    # `mse` grid: per matrix, the percentile among these with the least reconstruction error.
    mse_percentiles: list[float] = field(
        default_factory=lambda: [99.9, 99.95, 99.99, 99.999, 100.0])
    clip_sigmas: float = 12.85  # `sdclip`: clip = k * std(row)
    group_clip_sigmas: dict[str, float] = field(default_factory=dict)
    hessian_lambda: float = 0.175  # `sdclip-hessian`: weight of the Hessian-importance term
    clip_multiplier: float = 1.0  # scales every clip; --target-bytes searches it
    # Tensors with at most this many elements stay in float (fp16, or fp32 for control tensors).
    keep_float_max_numel: int = 65536
    prune_frac: float = 0.0  # zero this fraction of smallest |w| of each quantized matrix first
    # LQER: a rank-`lqer_rank` correction of the quantization error of the `lqer_top` worst
    # matrices, its factors quantized too (A in int2 per matrix, B in int4 per group of 64).
    lqer_rank: int = 0  # 0 = off
    lqer_top: int = 3
    lqer_group: int = 64
    gptq_block: int = 128
    gptq_damp: float = 0.01  # times the mean Hessian diagonal
    gptq_act_order: bool = True
    calib_batches: int = 16
    calib_batch_seqs: int = 8
    calib_seq_len: int = 256
    calib_seed: int = 0
    calib_temperature: float = 0.8  # self-generated calibration text
    device: str = "auto"  # where calibration and GPTQ run: auto (CUDA when present) | cpu | cuda

    def __post_init__(self) -> None:
        _check(2 <= self.bits <= 8, f"quantize.bits must be in [2, 8], got {self.bits}")
        for group, bits in self.group_bits.items():
            _check(group in TENSOR_GROUPS, f"quantize.group_bits: unknown group {group!r} "
                   f"(known: {', '.join(TENSOR_GROUPS)})")
            _check(2 <= bits <= 8, f"quantize.group_bits.{group} must be in [2, 8], got {bits}")
        for group, k in self.group_clip_sigmas.items():
            _check(group in TENSOR_GROUPS, f"quantize.group_clip_sigmas: unknown group {group!r} "
                   f"(known: {', '.join(TENSOR_GROUPS)})")
            _check(k > 0, f"quantize.group_clip_sigmas.{group} must be > 0, got {k}")
        _check(0.0 < self.clip_percentile <= 100.0,
               f"quantize.clip_percentile must be in (0, 100], got {self.clip_percentile}")
        _check(bool(self.mse_percentiles) and all(0 < p <= 100 for p in self.mse_percentiles),
               f"quantize.mse_percentiles must be non-empty values in (0, 100], "
               f"got {self.mse_percentiles}")
        _check(self.clip_sigmas > 0, f"quantize.clip_sigmas must be > 0, got {self.clip_sigmas}")
        _check(self.clip_multiplier > 0,
               f"quantize.clip_multiplier must be > 0, got {self.clip_multiplier}")
        _check(self.keep_float_max_numel >= 0,
               f"quantize.keep_float_max_numel must be >= 0, got {self.keep_float_max_numel}")
        _check(0.0 <= self.prune_frac < 1.0,
               f"quantize.prune_frac must be in [0, 1), got {self.prune_frac}")
        _check(self.lqer_rank >= 0, f"quantize.lqer_rank must be >= 0, got {self.lqer_rank}")
        _check(self.lqer_top >= 1, f"quantize.lqer_top must be >= 1, got {self.lqer_top}")
        _check(self.lqer_group >= 1, f"quantize.lqer_group must be >= 1, got {self.lqer_group}")
        _check(self.gptq_block >= 1, f"quantize.gptq_block must be >= 1, got {self.gptq_block}")
        _check(self.gptq_damp > 0, f"quantize.gptq_damp must be > 0, got {self.gptq_damp}")
        for key in ("calib_batches", "calib_batch_seqs", "calib_seq_len"):
            _check(getattr(self, key) >= 1, f"quantize.{key} must be >= 1, got {getattr(self, key)}")
        _check(self.calib_temperature > 0,
               f"quantize.calib_temperature must be > 0, got {self.calib_temperature}")
        _check(self.device in ("auto", "cpu", "cuda"),
               f"quantize.device must be one of auto, cpu, cuda; got {self.device!r}")

    def bits_for(self, group: str) -> int:
        return self.group_bits.get(group, self.bits)

    def clip_sigmas_for(self, group: str) -> float:
        return self.group_clip_sigmas.get(group, self.clip_sigmas)


@dataclass(frozen=True)
class CompressParams:
    """`golf compress`: codec and its level (null = the codec's strongest setting), and the layout
    of the payload before the codec (stages/transforms.py)."""

    codec: str = "zstd"
    level: int | None = None
    layout: str = "plain"  # plain | shuffle | grouped | bitpack
    limit_bytes: int = 16_000_000  # decimal bytes, code included

    def __post_init__(self) -> None:
        _check(self.limit_bytes >= 1, f"compress.limit_bytes must be >= 1, got {self.limit_bytes}")


EVAL_MODES = ("chunked", "sliding", "ttt")
# Short names of the projections a TTT LoRA adapter can wrap (stages/ttt.py maps them to modules).
LORA_TARGETS = ("q", "k", "v", "o", "up", "down")


@dataclass(frozen=True)
class EvalParams:
    """`golf eval`: how the validation split is scored (spec §6).

    `chunked` scores non-overlapping windows; `sliding` scores windows every `stride` tokens, each
    target once with at least `seq_len - stride` tokens of context; `ttt` is score-first test-time
    training on top of sliding windows (chunked when `stride == seq_len`).
    """

    mode: str = "chunked"
    seq_len: int = 1024
    batch_seqs: int = 8
    device: str = "auto"
    stride: int = 64  # sliding and ttt: a window every `stride` tokens
    doc_isolated: bool = False  # windows never span a BOS: each document scored with its own context
    # Score-first TTT (spec §6.3; §6.4 with ttt_lora_rank > 0).
    ttt_chunk_tokens: int = 32768  # global: tokens per chunk; LoRA: the per-document chunk (stride)
    ttt_optimizer: str = "sgd"  # sgd | adamw
    ttt_lr: float = 0.005  # cosine-decayed across chunks (global); constant for LoRA
    ttt_epochs: int = 3  # optimizer steps per chunk, each over all of the chunk's tokens
    ttt_momentum: float = 0.9  # SGD momentum, or AdamW beta1
    ttt_grad_clip: float = 1.0  # 0 = off
    ttt_freeze_blocks: int = 0  # the first N blocks are not adapted (global variant)
    ttt_lora_rank: int = 0  # 0 = global TTT of the whole model; > 0 = per-document LoRA adapters
    ttt_lora_alpha: float = 16.0  # the adapter output is scaled by alpha / rank
    ttt_lora_targets: list[str] = field(default_factory=lambda: ["q", "v"])  # of q, k, v, o, up, down
    ttt_lora_reset: bool = True  # fresh adapters (B = 0) and optimizer state for every document

    def __post_init__(self) -> None:
        _check(self.mode in EVAL_MODES,
               f"eval.mode must be one of {', '.join(EVAL_MODES)}; got {self.mode!r}")
        _check(self.seq_len >= 1, f"eval.seq_len must be >= 1, got {self.seq_len}")
        _check(self.batch_seqs >= 1, f"eval.batch_seqs must be >= 1, got {self.batch_seqs}")
        _check(self.device in ("auto", "cpu", "cuda"),
               f"eval.device must be one of auto, cpu, cuda; got {self.device!r}")
        _check(self.mode == "chunked" or 1 <= self.stride <= self.seq_len,
               f"eval.stride must be in [1, eval.seq_len = {self.seq_len}], got {self.stride}")
        _check(self.ttt_chunk_tokens >= 1,
               f"eval.ttt_chunk_tokens must be >= 1, got {self.ttt_chunk_tokens}")
        _check(self.ttt_optimizer in ("sgd", "adamw"),
               f"eval.ttt_optimizer must be one of sgd, adamw; got {self.ttt_optimizer!r}")
        _check(self.ttt_lr >= 0, f"eval.ttt_lr must be >= 0, got {self.ttt_lr}")
        _check(self.ttt_epochs >= 0, f"eval.ttt_epochs must be >= 0, got {self.ttt_epochs}")
        _check(0 <= self.ttt_momentum < 1,
               f"eval.ttt_momentum must be in [0, 1), got {self.ttt_momentum}")
        _check(self.ttt_grad_clip >= 0,
               f"eval.ttt_grad_clip must be >= 0 (0 = off), got {self.ttt_grad_clip}")
        _check(self.ttt_freeze_blocks >= 0,
               f"eval.ttt_freeze_blocks must be >= 0, got {self.ttt_freeze_blocks}")
        _check(self.ttt_lora_rank >= 0, f"eval.ttt_lora_rank must be >= 0, got {self.ttt_lora_rank}")
        _check(self.ttt_lora_alpha > 0, f"eval.ttt_lora_alpha must be > 0, got {self.ttt_lora_alpha}")
        unknown = [t for t in self.ttt_lora_targets if t not in LORA_TARGETS]
        _check(bool(self.ttt_lora_targets) and not unknown,
               f"eval.ttt_lora_targets must be a non-empty list of {', '.join(LORA_TARGETS)}; "
               f"got {list(self.ttt_lora_targets)}")


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "tokenize": TokenizeParams,
    "train": TrainParams,
    "average": AverageParams,
    "quantize": QuantizeParams,
    "compress": CompressParams,
    "eval": EvalParams,
}


# ---------------------------------------------------------------------------------------------------
# Type-checked construction from plain mappings (params.yaml sections, --set overrides)
# ---------------------------------------------------------------------------------------------------

def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return `value` as type `tp`, or raise a one-line error naming `key`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return {_coerce(k, key_tp, f"{key} key"): _coerce(v, val_tp, f"{key}.{k}")
                for k, v in value.items()}
    if origin is tuple:  # tuple[X, ...], written as a list in YAML
        item_tp = typing.get_args(tp)[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return tuple(_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}")
    raise TypeError(f"unsupported config type {tp!r} for {key}")


def build_section(section: str, values: dict[str, Any]) -> Any:
    """Build the dataclass of `section` from a mapping; unknown keys and bad types are errors."""
    if section not in SECTIONS:
        raise ConfigError(f"unknown params section {section!r}")
    cls = SECTIONS[section]
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"params section {section!r} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"unknown key {section}.{key} (known: {', '.join(sorted(names))})")
        kwargs[key] = _coerce(value, hints[key], f"{section}.{key}")
    return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain-data view of a config dataclass (for artifact metadata and JSON)."""
    return dataclasses.asdict(obj)
