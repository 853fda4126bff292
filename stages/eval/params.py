"""`EvalParams`: the `eval` section of params.yaml (read by `golf eval` and `golf audit`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from stages.params import Device, Range, check, param, validate

Positive = Annotated[int, Range(1)]
Count = Annotated[int, Range(0)]
NonNegative = Annotated[float, Range(0)]
LoraSite = Literal["q", "k", "v", "o", "mlp", "head"]  # lora.py


@dataclass(frozen=True)
class EvalParams:
    """How the validation split is scored.

    `chunked` scores non-overlapping windows; `sliding` scores windows every `stride` tokens, each
    target once with at least `seq_len - stride` tokens of context; `ttt` is score-first test-time
    training on top of sliding windows (chunked when `stride == seq_len`).
    """

    SECTION: ClassVar[str] = "eval"

    mode: Literal["chunked", "sliding", "ttt"] = param(
        "chunked", "chunked windows, sliding windows, or score-first test-time training")
    seq_len: Positive = param(1024, "tokens per scoring window")
    batch_seqs: Positive = param(8, "windows per forward pass")
    device: Device = param("auto", "where to score: auto = CUDA when present")
    stride: Positive = param(64, "sliding and ttt: a window every `stride` tokens (<= seq_len)")
    doc_isolated: bool = param(
        False, "no window spans a BOS: each document is scored with its own context only")
    ttt_chunk_tokens: Positive = param(
        32768, "global TTT: targets per chunk; LoRA TTT: targets per document chunk, each scored "
               "with up to seq_len tokens of context ending at the chunk's end")
    ttt_optimizer: Literal["sgd", "adamw"] = param("sgd", "TTT optimizer")
    ttt_lr: NonNegative = param(0.005, "TTT LR: cosine-decayed across chunks (global), constant "
                                       "(LoRA, AdamW)")
    ttt_epochs: Count = param(3, "optimizer steps per chunk, each over all of the chunk's targets")
    ttt_momentum: Annotated[float, Range(0, 1, hi_open=True)] = param(
        0.9, "SGD momentum, or AdamW beta1 (LoRA: AdamW)")
    ttt_grad_clip: NonNegative = param(1.0, "global TTT: clip the gradient norm to this; 0 = off")
    ttt_freeze_blocks: Count = param(0, "global TTT: the first N blocks are not adapted")
    ttt_lora_rank: Count = param(
        0, "0 = global TTT of the whole model; > 0 = per-document LoRA adapters of this rank")
    ttt_lora_alpha: Annotated[float, Range(0, lo_open=True)] = param(
        144.0, "the adapter output is scaled by alpha / rank")
    ttt_lora_targets: list[LoraSite] = param(
        ["q", "k", "v", "o", "mlp", "head"],
        "adapter sites: q, k, v, o (attention input -> output), mlp (MLP input -> output), head")
    ttt_lora_batch_docs: Positive = param(
        64, "LoRA: documents adapted side by side (each its own adapters), longest first")
    ttt_lora_beta2: Annotated[float, Range(0, 1, hi_open=True)] = param(0.99, "LoRA AdamW beta2")
    ttt_lora_eps: NonNegative = param(1e-10, "LoRA AdamW eps")
    ttt_lora_weight_decay: NonNegative = param(0.5, "LoRA AdamW decoupled weight decay")
    ttt_lora_grad_clip: NonNegative = param(
        0.0, "LoRA: clip each document's gradient norm to this; 0 = off")
    ttt_lora_warm_a: bool = param(
        True, "LoRA: a batch's lanes keep the previous batch's A (only B is reset)")
    ttt_phased_prefix_docs: Count = param(
        0, "phased TTT: the first N documents scored feed global SGD phases; 0 = off")
    ttt_phased_phases: Positive = param(3, "phased TTT: global SGD phases over the prefix")
    ttt_phased_lr: NonNegative = param(0.001, "phased TTT: SGD LR, cosine-decayed across chunks")
    ttt_phased_momentum: Annotated[float, Range(0, 1, hi_open=True)] = param(
        0.9, "phased TTT: SGD momentum")
    ttt_phased_epochs: Count = param(1, "phased TTT: passes over the scored documents per phase")
    ttt_phased_chunk_tokens: Positive = param(32768, "phased TTT: tokens per SGD step")
    ttt_phased_grad_clip: NonNegative = param(1.0, "phased TTT: gradient norm clip; 0 = off")

    def __post_init__(self) -> None:
        validate(self)
        check(self.mode == "chunked" or self.stride <= self.seq_len,
              f"eval.stride must be in [1, eval.seq_len = {self.seq_len}], got {self.stride}")
        check(bool(self.ttt_lora_targets), "eval.ttt_lora_targets must not be empty")
        check(self.ttt_phased_prefix_docs == 0 or self.ttt_lora_rank > 0,
              "eval.ttt_phased_prefix_docs needs per-document LoRA TTT (eval.ttt_lora_rank > 0)")
