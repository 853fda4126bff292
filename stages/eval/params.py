"""`EvalParams`: the `eval` section of params.yaml (read by `golf eval` and `golf audit`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from stages.model.roles import LoraTarget
from stages.params import Device, Range, check, param, validate

Positive = Annotated[int, Range(1)]
Count = Annotated[int, Range(0)]
NonNegative = Annotated[float, Range(0)]


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
        32768, "global TTT: targets per chunk; LoRA TTT: the per-document chunk (window stride)")
    ttt_optimizer: Literal["sgd", "adamw"] = param("sgd", "TTT optimizer")
    ttt_lr: NonNegative = param(0.005, "TTT LR: cosine-decayed across chunks (global), constant "
                                       "(LoRA)")
    ttt_epochs: Count = param(3, "optimizer steps per chunk, each over all of the chunk's targets")
    ttt_momentum: Annotated[float, Range(0, 1, hi_open=True)] = param(
        0.9, "SGD momentum, or AdamW beta1")
    ttt_grad_clip: NonNegative = param(1.0, "clip the TTT gradient norm to this; 0 = off")
    ttt_freeze_blocks: Count = param(0, "global TTT: the first N blocks are not adapted")
    ttt_lora_rank: Count = param(
        0, "0 = global TTT of the whole model; > 0 = per-document LoRA adapters of this rank")
    ttt_lora_alpha: Annotated[float, Range(0, lo_open=True)] = param(
        16.0, "the adapter output is scaled by alpha / rank")
    ttt_lora_targets: list[LoraTarget] = param(
        ["q", "v"], "projections that get adapters: q, k, v, o (attention), up, down (MLP)")
    ttt_lora_reset: bool = param(
        True, "fresh adapters (B = 0) and optimizer state for every document")

    def __post_init__(self) -> None:
        validate(self)
        check(self.mode == "chunked" or self.stride <= self.seq_len,
              f"eval.stride must be in [1, eval.seq_len = {self.seq_len}], got {self.stride}")
        check(bool(self.ttt_lora_targets), "eval.ttt_lora_targets must not be empty")
