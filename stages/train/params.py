"""`TrainParams`: the `train` section of params.yaml (baseline defaults; record options off)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from stages.params import Device, OnOff, Range, check, param, validate

NonNegative = Annotated[float, Range(0)]
Fraction = Annotated[float, Range(0, 1)]
Count = Annotated[int, Range(0)]
Positive = Annotated[int, Range(1)]


@dataclass(frozen=True)
class TrainParams:
    """Optimizer, schedule and budget of `golf train`."""

    SECTION: ClassVar[str] = "train"

    seed: int = param(1337, "seed of the init, the batch sampler and everything random")
    max_steps: Positive = param(20000, "step cap (the run also stops at the wall-clock cap)")
    max_wallclock_seconds: NonNegative = param(600.0, "wall-clock cap of training; 0 = none")
    batch_tokens: Positive = param(524288, "tokens per optimizer step, all processes together")
    seq_len: Annotated[int, Range(2)] = param(1024, "training sequence length")
    grad_accum_steps: Positive = param(1, "micro-batches the batch is split into")
    sampler: Literal["random", "sequential"] = param(
        "random", "how batches are read: random windows with replacement (seeded), or the train "
                  "shards in order as one stream, each token once per epoch (the baseline's)")
    doc_attention: bool = param(
        False, "document-isolated attention in training: each token attends only to its own "
               "document (BOS starts one; FlashAttention varlen on CUDA, a block-diagonal mask "
               "elsewhere); evaluation is unchanged")
    schedule: Literal["auto", "steps", "wallclock"] = param(
        "auto", "what drives the LR warmdown: steps/max_steps (deterministic, needed for exact "
                "resume), elapsed/max_wallclock_seconds (the records'), or the larger (auto)")
    warmdown_frac: Fraction = param(0.2, "LR decays linearly over this last fraction of the run")
    min_lr_frac: Fraction = param(0.0, "floor of the warmdown, as a fraction of the peak LR")
    matrix_lr: NonNegative = param(0.04, "Muon LR of the block matrices")
    embed_lr: NonNegative = param(0.05, "AdamW LR of the embedding and lookup tables")
    scalar_lr: NonNegative = param(0.04, "AdamW LR of scales, gates and mixes")
    muon_momentum: float = param(0.95, "Muon momentum after its warm-up")
    muon_momentum_warmup_start: float = param(0.85, "Muon momentum at step 0")
    muon_momentum_warmup_steps: Count = param(500, "steps of the momentum's linear warm-up")
    muon_backend_steps: Positive = param(5, "Newton-Schulz iterations per Muon update")
    muon_ns: Literal["classic", "polar_express"] = param(
        "classic", "Newton-Schulz coefficients: one classic tuple, or Polar Express's per-step")
    muon_row_normalize: bool = param(
        False, "MuonEq-R: divide each row of the update by its norm before Newton-Schulz")
    muon_wd: NonNegative = param(0.0, "decoupled weight decay of the matrices: W *= 1 - lr * wd")
    embed_wd: NonNegative = param(0.0, "AdamW weight decay of the embedding and tables")
    scalar_wd: NonNegative = param(0.0, "AdamW weight decay of scales, gates and mixes")
    adam_beta1: float = param(0.9, "AdamW beta1")
    adam_beta2: float = param(0.95, "AdamW beta2")
    adam_eps: float = param(1e-8, "AdamW epsilon")
    embed_bf16: bool = param(
        False, "keep the tied embedding table in bf16 as the baseline's and the records' scripts "
               "do (value, gradient and Adam moments rounded to bf16 every step); off = fp32")
    grad_clip_norm: NonNegative = param(0.0, "clip the global gradient norm to this; 0 = off")
    ema_decay: Annotated[float, Range(0, 1, hi_open=True)] = param(
        0.997, "decay of the fp32 EMA of the weights, saved as ema.safetensors")
    swa_every: Count = param(
        0, "write an SWA snapshot to RUN_DIR/swa/ every N steps once the LR scale is below "
           "swa_lr_scale, for `golf average` (tight SWA); 0 = off")
    swa_lr_scale: Annotated[float, Range(0, 1, lo_open=True)] = param(
        0.5, "SWA snapshots start when the LR scale falls below this")
    qat_bits: Annotated[int, Range(0, 8)] = param(
        0, "late QAT: fake-quantize the block matrices to this many bits (2-8) once the LR scale "
           "falls below qat_lr_scale; 0 = off")
    qat_lr_scale: Annotated[float, Range(0, 1, lo_open=True)] = param(
        0.15, "late QAT starts when the LR scale falls below this")
    qat_clip_sigmas: NonNegative = param(
        0.0, "late QAT clip: 0 = each row's abs max, else this many row stds (SDClip)")
    loop_enable_at: Annotated[float, Range(0, 1, hi_open=True)] = param(
        0.0, "models with model.num_loops > 0: progress at which the looped layers turn on")
    val_every: Count = param(
        0, "score the validation split every N steps (logged only: the weights are the same "
           "with or without it); 0 = off")
    checkpoint_every: Count = param(
        0, "write resumable state to RUN_DIR/resume/ every N steps, for --resume; 0 = off")
    device: Device = param("auto", "where to train: auto = CUDA when present")
    autocast: Annotated[Literal["auto", "bf16", "off"], OnOff("bf16")] = param(
        "auto", "bf16 autocast of the forward pass: auto = bf16 where bf16 matmuls are native "
                "(CUDA; CPUs with AVX512-BF16 or AMX), fp32 elsewhere; off = fp32")
    compile: Annotated[Literal["auto", "on", "off"], OnOff("on")] = param(
        "auto", "torch.compile the loss: auto = on with CUDA, off on CPU (a cold CPU compile "
                "costs more than it saves on short runs)")
    log_every: Positive = param(10, "steps per row of the live curves and the progress line")

    # Keys that cannot change the weights (validation is RNG-neutral, logging and saving are side
    # effects): a resumed run may change them.
    NEUTRAL_KEYS: ClassVar[tuple[str, ...]] = ("checkpoint_every", "val_every", "log_every")

    def __post_init__(self) -> None:
        validate(self)
        check(self.batch_tokens % self.seq_len == 0 and self.batch_tokens >= self.seq_len,
              f"train.batch_tokens ({self.batch_tokens}) must be a positive multiple of "
              f"train.seq_len ({self.seq_len})")
        check((self.batch_tokens // self.seq_len) % self.grad_accum_steps == 0,
              f"train.grad_accum_steps ({self.grad_accum_steps}) must divide the "
              f"{self.batch_tokens // self.seq_len} sequences of a batch")
        check(self.schedule != "wallclock" or self.max_wallclock_seconds > 0,
              "train.schedule=wallclock needs train.max_wallclock_seconds > 0")
        check(self.qat_bits == 0 or self.qat_bits >= 2,
              f"train.qat_bits must be 0 (off) or in [2, 8], got {self.qat_bits}")
