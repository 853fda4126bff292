"""Global score-first TTT: the whole model trains on each chunk of the stream once it is scored.

Chunks of `ttt_chunk_tokens` targets; a window belongs to the chunk holding the first target it
scores. The chunk's targets are cut into rows of `seq_len`, and each of `ttt_epochs` epochs is one
optimizer step over all rows (SGD with momentum or AdamW), the LR cosine-decayed across chunks,
gradients clipped, the first `ttt_freeze_blocks` blocks frozen. The order that makes it legal
lives in ttt.py (`ScoredChunks`); this module only plans chunks and trains on what it hands out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stages.eval.params import EvalParams
from stages.eval.scoring import Scores, Window, model_log_probs, plan_windows, score_windows
from stages.eval.ttt import Chunk, ScoredChunks, TrainingChunk, check_scored


def global_chunks(windows: Sequence[Window], n_targets: int, chunk_tokens: int) -> list[Chunk]:
    """Chunks of `chunk_tokens` targets; each window goes to the chunk of its first scored target."""
    count = max(1, math.ceil(n_targets / chunk_tokens))
    grouped: list[list[Window]] = [[] for _ in range(count)]
    for w in windows:
        grouped[w.scored[0] // chunk_tokens].append(w)
    return [Chunk(c, grouped[c], (c * chunk_tokens, min((c + 1) * chunk_tokens, n_targets)), -1,
                  trainable=c < count - 1) for c in range(count)]


def plan_global_chunks(stream: np.ndarray, params: EvalParams) -> list[Chunk]:
    """The global chunks of a pass over `stream` (N + 1 tokens), in scoring order."""
    windows = plan_windows(stream, params.seq_len, params.stride, params.doc_isolated)
    return global_chunks(windows, len(stream) - 1, params.ttt_chunk_tokens)


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
        chunk = check_scored(chunk)
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


def run_global_ttt(net: nn.Module, tokens: torch.Tensor, params: EvalParams, scores: Scores,
            probes: frozenset[int] = frozenset(),
            on_progress: Callable[[int], None] | None = None) -> None:
    """Score-first TTT over `tokens` (int64, on the net's device) with `net`, a private copy that
    this adapts in place; losses go to `scores`."""
    chunks = plan_global_chunks(tokens.cpu().numpy(), params)
    predict = model_log_probs(net)
    trainer = TTTTrainer(net, params, len(chunks), scores)

    def score(step: list[Chunk]) -> None:
        for chunk in step:
            score_windows(predict, tokens, chunk.windows, params.batch_seqs, scores, probes,
                          on_progress)

    for chunk in ScoredChunks(chunks, tokens, params.seq_len, score, scores):
        trainer.step(chunk)
