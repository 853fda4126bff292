"""Score-first test-time training: global SGD over chunks, or per-document LoRA (optionally phased).

The validation stream is cut into chunks. Each chunk is scored under `torch.inference_mode()` and
its losses committed; only then may the model train on the chunk's targets, which helps the chunks
scored after it. The last chunk is never trained on.

The order is structural, not a convention:
- `ScoredChunks` is the only thing that produces training data (`TrainingChunk`). Iterating it
  scores a step (one chunk, or with LoRA one chunk of each document of a batch) and commits its
  losses before it yields the step's trainable chunks, and it never yields a last chunk. Being a
  generator, it scores the next step only after the caller's training on this one has returned.
- `TTTTrainer.step` (ttt_global.py) and `LoRATrainer.step` (ttt_document.py) take a
  `TrainingChunk` and nothing else; phased global SGD (phased.py) takes only `ScoredDocuments`. No function here trains on a token stream.
- Every score and every update is written to an event log (`Scores.events`), which `golf audit`
  checks: each chunk scored once, every update only on targets already scored, never the last chunk.

Variants, each in its own module so that a submission packs only the one its params use:
- global (ttt_global.py, `ttt_lora_rank == 0`): chunks of `ttt_chunk_tokens` targets; a window
  belongs to the chunk holding the first target it scores. The chunk's targets are cut into rows of `seq_len`, and each
  of `ttt_epochs` epochs is one optimizer step over all rows (SGD with momentum or AdamW), the LR
  cosine-decayed across chunks, gradients clipped, the first `ttt_freeze_blocks` blocks frozen.
- per-document LoRA (ttt_document.py, `ttt_lora_rank > 0`), as the best record: documents (cut
  before each BOS) are sorted by length and taken `ttt_lora_batch_docs` at a time, longest batch first. Within a
  document, chunk c is targets [c*k, (c+1)*k) (k = `ttt_chunk_tokens`), scored with the context of
  up to `seq_len` tokens that ends at the chunk's end; then the document's adapters (lora.py) take
  `ttt_epochs` AdamW steps on that chunk's mean loss with the same context. A document's last
  chunk is not trained on (nothing of it is left to gain), so a document of n chunks gets n - 1
  updates. Each document has its own adapter lane and per-element AdamW state (no clip, or a
  per-document clip), so its numbers do not depend on its batch mates; a batch starts with B = 0
  and a fresh optimizer, and with `ttt_lora_warm_a` each lane keeps the previous batch's A.
- phased (`ttt_phased_prefix_docs > 0`): between LoRA batches, global SGD phases over documents
  already scored (phased.py); after each phase the adapters start afresh.

The adapted model is a private copy built from the loaded weights; the artifact is never touched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby

import numpy as np
import torch
from torch import nn

from stages.eval.params import EvalParams
from stages.eval.scoring import Scores, Window


@dataclass(frozen=True)
class Chunk:
    index: int  # ids run in scoring order
    windows: list[Window]
    train_span: tuple[int, int]  # targets [lo, hi) trained on once the chunk is scored
    doc: int  # document of a per-document chunk (-1 for global chunks)
    trainable: bool  # False for the last chunk (and a document's last one)
    lane: int = -1  # per-document LoRA: the adapter lane of the chunk's document
    step: int = -1  # chunks sharing a step >= 0 are scored together and trained on in one update


@dataclass(frozen=True)
class TrainingChunk:
    """Tokens of scored chunks (one step): what the trainers train on."""

    index: int  # the step's first chunk
    chunks: tuple[int, ...]  # the chunks it holds, one per row (global: one chunk, many rows)
    spans: tuple[tuple[int, int], ...]  # their target spans
    inputs: torch.Tensor  # (rows, T) int64
    targets: torch.Tensor  # (rows, T) int64
    mask: torch.Tensor  # (rows, T) bool: which targets count in the loss
    lanes: torch.Tensor | None = None  # (rows,) per-document LoRA: each row's adapter lane


class ScoredChunks:
    """Scores each step, commits its losses, and only then hands out its tokens for training.

    Iterate it: each item is the `TrainingChunk` of the trainable chunks of a step that was just
    scored. Untrainable chunks (the last one, a document's last) are scored and never handed out.
    `score` receives the step's chunks and must commit their windows' losses.
    """

    def __init__(self, chunks: Sequence[Chunk], tokens: torch.Tensor, seq_len: int,
                 score: Callable[[list[Chunk]], None], scores: Scores):
        self.chunks, self.tokens, self.seq_len = chunks, tokens, seq_len
        self.score, self.scores = score, scores

    def steps(self) -> Iterator[list[Chunk]]:
        for key, group in groupby(self.chunks, key=lambda c: (c.step, c.index if c.step < 0 else 0)):
            yield list(group)

    def __iter__(self) -> Iterator[TrainingChunk]:
        for step in self.steps():
            self.score(step)  # under inference mode; commits into self.scores
            for chunk in step:
                self.scores.events.append(("score", chunk.index, [w.scored for w in chunk.windows]))
            trainable = [c for c in step if c.trainable]
            if not trainable:
                continue
            for chunk in trainable:
                lo, hi = chunk.train_span
                if not (self.scores.counts[lo:hi] == 1).all():
                    raise AssertionError(f"chunk {chunk.index}: targets {lo}..{hi} not all scored "
                                         f"before training")
            yield self._training_chunk(trainable)

    def _training_chunk(self, step: list[Chunk]) -> TrainingChunk:
        ids = tuple(c.index for c in step)
        spans = tuple(c.train_span for c in step)
        if step[0].doc >= 0:  # one row per document: its window, loss on the targets it scored
            width = max(c.windows[0].length for c in step)
            x = torch.zeros(len(step), width, dtype=torch.long, device=self.tokens.device)
            y = torch.zeros_like(x)
            mask = torch.zeros_like(x, dtype=torch.bool)
            for r, c in enumerate(step):
                (w,) = c.windows
                x[r, :w.length] = self.tokens[w.start:w.start + w.length]
                y[r, :w.length] = self.tokens[w.start + 1:w.start + 1 + w.length]
                mask[r, w.score_from:w.length] = True
            lanes = torch.tensor([c.lane for c in step], device=self.tokens.device)
            return TrainingChunk(ids[0], ids, spans, x, y, mask, lanes)
        (chunk,) = step
        lo, hi = chunk.train_span
        rows = math.ceil((hi - lo) / self.seq_len)
        x = torch.zeros(rows, self.seq_len, dtype=torch.long, device=self.tokens.device)
        y = torch.zeros_like(x)
        mask = torch.zeros_like(x, dtype=torch.bool)
        for r in range(rows):
            a, b = lo + r * self.seq_len, min(lo + (r + 1) * self.seq_len, hi)
            x[r, :b - a] = self.tokens[a:b]
            y[r, :b - a] = self.tokens[a + 1:b + 1]
            mask[r, :b - a] = True  # the padded tail of the last row is causal-invisible and unscored
        return TrainingChunk(chunk.index, ids, spans, x, y, mask)


def check_scored(chunk: object) -> TrainingChunk:
    """`chunk`, if it came from `ScoredChunks` (the trainers' only input)."""
    if not isinstance(chunk, TrainingChunk):
        raise TypeError("TTT trains only on chunks handed out by ScoredChunks")
    return chunk




def plan_chunks(stream: np.ndarray, params: EvalParams) -> list[Chunk]:
    """The chunks of a TTT pass over the token stream `stream` (N + 1 tokens), in scoring order."""
    if params.ttt_lora_rank > 0:
        from stages.eval.ttt_document import plan_document_chunks
        return plan_document_chunks(stream, params)
    from stages.eval.ttt_global import plan_global_chunks
    return plan_global_chunks(stream, params)


def run_ttt(net: nn.Module, tokens: torch.Tensor, params: EvalParams, scores: Scores,
            probes: frozenset[int] = frozenset(),
            on_progress: Callable[[int], None] | None = None) -> None:
    """Score-first TTT over `tokens` (int64, on the net's device) with `net`, a private copy that
    this adapts in place; losses go to `scores`. The variant's module is imported here, so a
    submission holds only the one its params use."""
    if params.ttt_lora_rank > 0:
        from stages.eval.ttt_document import run_lora_ttt
        run_lora_ttt(net, tokens, params, scores, probes, on_progress)
    else:
        from stages.eval.ttt_global import run_global_ttt
        run_global_ttt(net, tokens, params, scores, probes, on_progress)
