"""Per-document LoRA score-first TTT, as the best record, optionally phased.

Documents (cut before each BOS) are sorted by length and taken `ttt_lora_batch_docs` at a time,
longest batch first. Within a document, chunk c is targets [c*k, (c+1)*k) (k = `ttt_chunk_tokens`),
scored with the context of up to `seq_len` tokens that ends at the chunk's end; then the document's
adapters (lora.py) take `ttt_epochs` AdamW steps on that chunk's mean loss with the same context.
With `ttt_phased_prefix_docs > 0`, phases of global SGD over documents already scored run between
batches (phased.py). The order that makes it legal lives in ttt.py (`ScoredChunks`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import groupby

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stages.eval.lora import DocumentAdapters, LaneLoRA
from stages.eval.params import EvalParams
from stages.eval.phased import PhaseSchedule, ScoredDocuments, global_sgd
from stages.eval.scoring import Scores, document_chunk_windows, score_windows, segments
from stages.eval.ttt import Chunk, ScoredChunks, TrainingChunk, check_scored


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


def plan_document_chunks(stream: np.ndarray, params: EvalParams) -> list[Chunk]:
    """Every document's chunks of a pass over `stream` (N + 1 tokens), in scoring order."""
    docs = segments(stream, doc_isolated=True)
    batches = [b for _, b in document_batches(docs, params.ttt_lora_batch_docs)]
    return [c for chunks in document_chunks(docs, batches, params) for c in chunks]


def _by_length(mask: torch.Tensor) -> list[torch.Tensor]:
    """Row indices grouped by their last masked position, so that each group runs unpadded
    (a row's length can change the model's output where NTK RoPE scales with it)."""
    ends = (mask.cumsum(1).argmax(1) + 1).tolist()  # one past the last masked position
    return [torch.tensor([r for r, e in enumerate(ends) if e == end], device=mask.device)
            for end in sorted(set(ends), reverse=True)]


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
        chunk = check_scored(chunk)
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

            def predict(x: torch.Tensor, y: torch.Tensor, lanes=lanes) -> torch.Tensor:
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
