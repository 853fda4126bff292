"""Score-first test-time training: global SGD over chunks, or per-document LoRA (optionally phased).

The validation stream is cut into chunks. Each chunk is scored under `torch.inference_mode()` and
its losses committed; only then may the model train on the chunk's targets, which helps the chunks
scored after it. The last chunk is never trained on.

The order is structural, not a convention:
- `ScoredChunks` is the only thing that produces training data (`TrainingChunk`). Iterating it
  scores a step (one chunk, or with LoRA one chunk of each document of a batch) and commits its
  losses before it yields the step's trainable chunks, and it never yields a last chunk. Being a
  generator, it scores the next step only after the caller's training on this one has returned.
- `TTTTrainer.step` / `LoRATrainer.step` take a `TrainingChunk` and nothing else; phased global
  SGD (phased.py) takes only `ScoredDocuments`. No function here trains on a token stream.
- Every score and every update is written to an event log (`Scores.events`), which `golf audit`
  checks: each chunk scored once, every update only on targets already scored, never the last chunk.

Variants:
- global (`ttt_lora_rank == 0`): chunks of `ttt_chunk_tokens` targets; a window belongs to the chunk
  holding the first target it scores. The chunk's targets are cut into rows of `seq_len`, and each
  of `ttt_epochs` epochs is one optimizer step over all rows (SGD with momentum or AdamW), the LR
  cosine-decayed across chunks, gradients clipped, the first `ttt_freeze_blocks` blocks frozen.
- per-document LoRA (`ttt_lora_rank > 0`), as the best record: documents (cut before each BOS) are
  sorted by length and taken `ttt_lora_batch_docs` at a time, longest batch first. Within a
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
import torch.nn.functional as F
from torch import nn

from stages.eval.lora import DocumentAdapters, LaneLoRA
from stages.eval.params import EvalParams
from stages.eval.phased import PhaseSchedule, ScoredDocuments, global_sgd
from stages.eval.scoring import (Scores, Window, document_chunk_windows, model_log_probs,
                                 plan_windows, score_windows, segments)


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


def global_chunks(windows: Sequence[Window], n_targets: int, chunk_tokens: int) -> list[Chunk]:
    """Chunks of `chunk_tokens` targets; each window goes to the chunk of its first scored target."""
    count = max(1, math.ceil(n_targets / chunk_tokens))
    grouped: list[list[Window]] = [[] for _ in range(count)]
    for w in windows:
        grouped[w.scored[0] // chunk_tokens].append(w)
    return [Chunk(c, grouped[c], (c * chunk_tokens, min((c + 1) * chunk_tokens, n_targets)), -1,
                  trainable=c < count - 1) for c in range(count)]


def document_batches(docs: Sequence[tuple[int, int]],
                     batch_docs: int) -> list[tuple[int, list[int]]]:
    """(rank, document ids) of each batch, in scoring order: the documents sorted by length
    (stable) and cut into `batch_docs` (rank = the batch's place in that order), the batches then
    taken longest first (the record's `_build_ttt_global_batches`)."""
    by_length = sorted(range(len(docs)), key=lambda d: docs[d][1])
    batches = [by_length[i:i + batch_docs] for i in range(0, len(by_length), batch_docs)]
    return sorted(enumerate(batches), key=lambda rb: -max(docs[d][1] for d in rb[1]))


def document_chunks(docs: Sequence[tuple[int, int]], batches: Sequence[Sequence[int]],
                    params: EvalParams) -> list[list[Chunk]]:
    """Per batch, its chunks in scoring order: step c holds chunk c of each document that has one."""
    chunk_tokens = min(params.ttt_chunk_tokens, params.seq_len)
    out, index, step = [], 0, 0
    for batch in batches:
        windows = [document_chunk_windows(*docs[d], params.seq_len, chunk_tokens) for d in batch]
        chunks = []
        for c in range(max(len(w) for w in windows)):
            for lane, (d, ws) in enumerate(zip(batch, windows, strict=True)):
                if c < len(ws):
                    chunks.append(Chunk(index, [ws[c]], ws[c].scored, d, trainable=c + 1 < len(ws),
                                        lane=lane, step=step))
                    index += 1
            step += 1
        out.append(chunks)
    return out


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


def _check_scored(chunk: object) -> TrainingChunk:
    if not isinstance(chunk, TrainingChunk):
        raise TypeError("TTT trains only on chunks handed out by ScoredChunks")
    return chunk


def _by_length(mask: torch.Tensor) -> list[torch.Tensor]:
    """Row indices grouped by their last masked position, so that each group runs unpadded
    (a row's length can change the model's output where NTK RoPE scales with it)."""
    ends = (mask.cumsum(1).argmax(1) + 1).tolist()  # one past the last masked position
    return [torch.tensor([r for r, e in enumerate(ends) if e == end], device=mask.device)
            for end in sorted(set(ends), reverse=True)]


class TTTTrainer:
    """Global TTT: optimizer steps of the whole model on `TrainingChunk`s, logging each update."""

    def __init__(self, net: nn.Module, params: EvalParams, num_chunks: int, scores: Scores):
        self.net, self.p, self.num_chunks, self.scores = net, params, num_chunks, scores
        frozen = {id(p) for blk in list(net.blocks)[:params.ttt_freeze_blocks]
                  for p in blk.parameters()}
        self.params = [p for p in net.parameters() if id(p) not in frozen]
        for p in net.parameters():
            p.requires_grad_(id(p) not in frozen)
        if params.ttt_optimizer == "sgd":
            self.optimizer = torch.optim.SGD(self.params, lr=params.ttt_lr,
                                             momentum=params.ttt_momentum)
        else:
            self.optimizer = torch.optim.AdamW(self.params, lr=params.ttt_lr,
                                               betas=(params.ttt_momentum, 0.99), weight_decay=0.0)

    def lr(self, chunk_index: int) -> float:
        """Cosine from ttt_lr to 0 across chunks."""
        if self.num_chunks < 2:
            return self.p.ttt_lr
        return self.p.ttt_lr * 0.5 * (1 + math.cos(math.pi * chunk_index / (self.num_chunks - 1)))

    def step(self, chunk: TrainingChunk) -> None:
        """`ttt_epochs` optimizer steps on the chunk's targets (already scored and committed)."""
        chunk = _check_scored(chunk)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr(chunk.index)
        device = chunk.inputs.device
        for _ in range(self.p.ttt_epochs):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = self.net(chunk.inputs).float()
            nll = F.cross_entropy(logits.flatten(0, 1), chunk.targets.flatten(),
                                  reduction="none").view_as(chunk.targets)
            loss = (nll * chunk.mask).sum() / chunk.mask.sum()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.p.ttt_grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.params, self.p.ttt_grad_clip)
            self.optimizer.step()
            self.scores.events.append(("update", chunk.index, list(chunk.spans)))


class LoRATrainer:
    """Per-document LoRA: the adapters of the current batch, their optimizer, and its steps.

    As the record: a bank of `ttt_lora_batch_docs` lanes serves every full batch (B reset, fresh
    AdamW state, A kept with `ttt_lora_warm_a`); a batch of another size gets adapters of its own;
    a phase of global SGD retires the bank, and the next batch draws a new one.
    """

    def __init__(self, net: nn.Module, params: EvalParams, scores: Scores):
        self.net, self.p, self.scores = net, params, scores
        for p in net.parameters():
            p.requires_grad_(False)
        self.bank: DocumentAdapters | None = None
        self.current: DocumentAdapters | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.drawn = 0  # adapters drawn so far: the seed of the next ones

    def _draw(self, lanes: int) -> DocumentAdapters:
        self.drawn += 1
        return DocumentAdapters(self.net, self.p.ttt_lora_targets, self.p.ttt_lora_rank,
                                self.p.ttt_lora_alpha, lanes, seed=self.drawn - 1)

    def start_batch(self, size: int) -> None:
        """Before a batch's first chunk: adapters that add nothing (B = 0), fresh AdamW state."""
        if self.current is not None:
            self.current.remove()
        if size == self.p.ttt_lora_batch_docs and self.p.ttt_lora_warm_a:
            if self.bank is None:
                self.bank = self._draw(size)
            self.bank.reset()
            self.current = self.bank
        else:
            self.current = self._draw(size)
        self.current.attach()
        p = self.p
        self.optimizer = torch.optim.AdamW(self.current.parameters(), lr=p.ttt_lr,
                                           betas=(p.ttt_momentum, p.ttt_lora_beta2),
                                           eps=p.ttt_lora_eps, weight_decay=p.ttt_lora_weight_decay)

    def end_phase(self) -> None:
        """Before global SGD: detach the adapters; the next batch draws a new bank."""
        self.close()
        self.bank = None

    def close(self) -> None:
        if self.current is not None:
            self.current.remove()
        self.current = None

    def logits(self, idx: torch.Tensor, lanes: torch.Tensor) -> torch.Tensor:
        return self.current.logits(idx, lanes)

    def _clip_per_lane(self) -> None:
        """Clip each lane's gradient norm on its own, so batch mates never scale each other."""
        lanes = [m for m in self.current.modules() if isinstance(m, LaneLoRA)]
        sq = sum(m.A.grad.flatten(1).square().sum(1) + m.B.grad.flatten(1).square().sum(1)
                 for m in lanes)  # (lanes,)
        factor = (self.p.ttt_lora_grad_clip / (sq.sqrt() + 1e-6)).clamp(max=1.0)
        for m in lanes:
            m.A.grad.mul_(factor[:, None, None])
            m.B.grad.mul_(factor[:, None, None])

    def step(self, chunk: TrainingChunk) -> None:
        """`ttt_epochs` AdamW steps, each on the sum over documents of their chunk's mean loss."""
        chunk = _check_scored(chunk)
        if chunk.lanes is None:
            raise TypeError("LoRA TTT trains on per-document chunks")
        device = chunk.inputs.device
        for _ in range(self.p.ttt_epochs):
            loss = torch.zeros((), device=device)
            for rows in _by_length(chunk.mask):
                x, y, mask = chunk.inputs[rows], chunk.targets[rows], chunk.mask[rows]
                width = int(mask.cumsum(1).argmax(1).max()) + 1
                x, y, mask = x[:, :width], y[:, :width], mask[:, :width]
                with torch.autocast(device.type, dtype=torch.bfloat16,
                                    enabled=device.type == "cuda"):
                    logits = self.logits(x, chunk.lanes[rows])  # (rows, width, V)
                nll = F.cross_entropy(logits.flatten(0, 1), y.flatten(),
                                      reduction="none").view_as(y)
                loss = loss + ((nll * mask).sum(1) / mask.sum(1)).sum()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.p.ttt_lora_grad_clip > 0:
                self._clip_per_lane()
            self.optimizer.step()
            for index, span in zip(chunk.chunks, chunk.spans, strict=True):
                self.scores.events.append(("update", index, [span]))


def plan_chunks(stream: np.ndarray, params: EvalParams) -> list[Chunk]:
    """The chunks of a TTT pass over the token stream `stream` (N + 1 tokens), in scoring order."""
    if params.ttt_lora_rank > 0:
        docs = segments(stream, doc_isolated=True)
        batches = [b for _, b in document_batches(docs, params.ttt_lora_batch_docs)]
        return [c for chunks in document_chunks(docs, batches, params) for c in chunks]
    windows = plan_windows(stream, params.seq_len, params.stride, params.doc_isolated)
    return global_chunks(windows, len(stream) - 1, params.ttt_chunk_tokens)


def run_ttt(net: nn.Module, tokens: torch.Tensor, params: EvalParams, scores: Scores,
            probes: frozenset[int] = frozenset(),
            on_progress: Callable[[int], None] | None = None) -> None:
    """Score-first TTT over `tokens` (int64, on the net's device) with `net`, a private copy that
    this adapts in place; losses go to `scores`."""
    if params.ttt_lora_rank > 0:
        run_lora_ttt(net, tokens, params, scores, probes, on_progress)
        return
    chunks = plan_chunks(tokens.cpu().numpy(), params)
    predict = model_log_probs(net)
    trainer = TTTTrainer(net, params, len(chunks), scores)

    def score(step: list[Chunk]) -> None:
        for chunk in step:
            score_windows(predict, tokens, chunk.windows, params.batch_seqs, scores, probes,
                          on_progress)

    for chunk in ScoredChunks(chunks, tokens, params.seq_len, score, scores):
        trainer.step(chunk)


def run_lora_ttt(net: nn.Module, tokens: torch.Tensor, params: EvalParams, scores: Scores,
                 probes: frozenset[int] = frozenset(),
                 on_progress: Callable[[int], None] | None = None) -> None:
    """Per-document LoRA TTT, batch by batch, with phases of global SGD when asked (module doc)."""
    docs = segments(tokens.cpu().numpy(), doc_isolated=True)
    ranked = document_batches(docs, params.ttt_lora_batch_docs)
    batches = [b for _, b in ranked]
    trainer = LoRATrainer(net, params, scores)
    phases = PhaseSchedule(len(docs), params)

    def score(step: list[Chunk]) -> None:
        by_length = sorted(step, key=lambda c: -c.windows[0].length)  # each group runs unpadded
        for _, group in groupby(by_length, key=lambda c: c.windows[0].length):
            group = list(group)
            lanes = torch.tensor([c.lane for c in group], device=tokens.device)

            def predict(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                return F.log_softmax(trainer.logits(x, lanes), dim=-1)

            score_windows(predict, tokens, [c.windows[0] for c in group], len(group), scores,
                          probes, on_progress)

    try:
        for (rank, batch), chunks in zip(ranked, document_chunks(docs, batches, params),
                                         strict=True):
            trainer.start_batch(len(batch))
            for chunk in ScoredChunks(chunks, tokens, params.seq_len, score, scores):
                trainer.step(chunk)
            due = phases.after_batch(rank, batch)
            if due is not None:
                trainer.end_phase()
                spans = [(docs[d][0], docs[d][0] + docs[d][1]) for d in due]
                global_sgd(net, tokens, ScoredDocuments(spans, scores), params, scores,
                           phases.phase)
    finally:
        trainer.close()
