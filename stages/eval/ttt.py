"""Score-first test-time training: global SGD over chunks, or per-document LoRA.

The validation stream is cut into chunks. For each chunk in order: its windows are scored under
`torch.inference_mode()` and the losses committed; only then may the model train on the chunk's
targets, which helps the chunks after it. The last chunk is never trained on.

The order is structural, not a convention:
- `ScoredChunks` is the only thing that produces training data (`TrainingChunk`). Iterating it scores
  chunk c and commits its losses before it yields chunk c's tokens, and it never yields the last
  chunk. Being a generator, it scores chunk c + 1 only after the caller's training on chunk c has
  returned, so chunk c + 1 is scored by the updated model.
- `TTTTrainer.step` takes a `TrainingChunk` and nothing else; no function here takes a token stream
  and trains on it.
- Every score and every update is written to an event log (`Scores.events`), which `golf audit`
  checks: each chunk scored once, every update only on targets already scored, never the last chunk.

Variants:
- global (`ttt_lora_rank == 0`): chunks of `ttt_chunk_tokens` targets; a window belongs to the chunk
  holding the first target it scores. The chunk's targets are cut into rows of `seq_len`, and each
  of `ttt_epochs` epochs is one optimizer step over all rows (SGD with momentum or AdamW), the LR
  cosine-decayed across chunks, gradients clipped, the first `ttt_freeze_blocks` blocks frozen.
- per-document LoRA (`ttt_lora_rank > 0`): documents are scored on their own (windows never span a
  BOS); each window of stride `ttt_chunk_tokens` is a chunk, trained on after scoring with the same
  window as context, at a constant LR. Rank-r adapters (A ~ U(+-1/sqrt(in)), B = 0, output scaled by
  alpha / r) are added to the chosen projections by forward hooks, so the model code is untouched;
  with `ttt_lora_reset` every document starts from B = 0 and a fresh optimizer (A kept), and a
  document's last chunk is not trained on (nothing of that document is left to gain from it).
  The tied output head is not a module, so it gets no adapter.

The adapted model is a private copy built from the loaded weights; the artifact is never touched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from stages.data.shards import BOS_ID
from stages.eval.params import EvalParams
from stages.eval.scoring import Scores, Window, model_log_probs, plan_windows, score_windows


@dataclass(frozen=True)
class Chunk:
    index: int
    windows: list[Window]
    train_span: tuple[int, int]  # targets [lo, hi) trained on once the chunk is scored
    doc: int  # document of a per-document chunk (-1 for global chunks)
    trainable: bool  # False for the last chunk (and a document's last one with LoRA reset)


@dataclass(frozen=True)
class TrainingChunk:
    """Tokens of a chunk that has been scored: what `TTTTrainer.step` trains on."""

    index: int
    doc: int
    span: tuple[int, int]
    inputs: torch.Tensor  # (rows, T) int64
    targets: torch.Tensor  # (rows, T) int64
    mask: torch.Tensor  # (rows, T) bool: which targets count in the loss


def global_chunks(windows: Sequence[Window], n_targets: int, chunk_tokens: int) -> list[Chunk]:
    """Chunks of `chunk_tokens` targets; each window goes to the chunk of its first scored target."""
    count = max(1, math.ceil(n_targets / chunk_tokens))
    grouped: list[list[Window]] = [[] for _ in range(count)]
    for w in windows:
        grouped[w.scored[0] // chunk_tokens].append(w)
    return [Chunk(c, grouped[c], (c * chunk_tokens, min((c + 1) * chunk_tokens, n_targets)), -1,
                  trainable=c < count - 1) for c in range(count)]


def document_chunks(windows: Sequence[Window], tokens_doc: np.ndarray, reset: bool) -> list[Chunk]:
    """One chunk per window of a document-isolated plan; `tokens_doc[t]` is target t's document."""
    chunks = []
    for i, w in enumerate(windows):
        doc = int(tokens_doc[w.scored[0]])
        last_of_doc = i + 1 == len(windows) or int(tokens_doc[windows[i + 1].scored[0]]) != doc
        chunks.append(Chunk(i, [w], w.scored, doc,
                            trainable=i + 1 < len(windows) and not (reset and last_of_doc)))
    return chunks


class ScoredChunks:
    """Scores each chunk, commits its losses, and only then hands out its tokens for training.

    Iterate it: each item is the `TrainingChunk` of a chunk that was just scored. The last chunk is
    scored and never handed out.
    """

    def __init__(self, chunks: Sequence[Chunk], tokens: torch.Tensor, seq_len: int,
                 score: Callable[[Chunk], None], scores: Scores):
        self.chunks, self.tokens, self.seq_len = chunks, tokens, seq_len
        self.score, self.scores = score, scores

    def __iter__(self) -> Iterator[TrainingChunk]:
        for chunk in self.chunks:
            self.score(chunk)  # under inference mode; commits into self.scores
            self.scores.events.append(("score", chunk.index, [w.scored for w in chunk.windows]))
            if not chunk.trainable:
                continue
            lo, hi = chunk.train_span
            if not (self.scores.counts[lo:hi] == 1).all():
                raise AssertionError(f"chunk {chunk.index}: targets {lo}..{hi} not all scored "
                                     f"before training")
            yield self._training_chunk(chunk)

    def _training_chunk(self, chunk: Chunk) -> TrainingChunk:
        lo, hi = chunk.train_span
        if chunk.doc >= 0:  # the window itself: its context, loss on the targets it scored
            (w,) = chunk.windows
            x = self.tokens[w.start:w.start + w.length][None]
            y = self.tokens[w.start + 1:w.start + 1 + w.length][None]
            mask = torch.zeros_like(y, dtype=torch.bool)
            mask[0, w.score_from:] = True
            return TrainingChunk(chunk.index, chunk.doc, (lo, hi), x, y, mask)
        rows = math.ceil((hi - lo) / self.seq_len)
        x = torch.zeros(rows, self.seq_len, dtype=torch.long, device=self.tokens.device)
        y = torch.zeros_like(x)
        mask = torch.zeros_like(x, dtype=torch.bool)
        for r in range(rows):
            a, b = lo + r * self.seq_len, min(lo + (r + 1) * self.seq_len, hi)
            x[r, :b - a] = self.tokens[a:b]
            y[r, :b - a] = self.tokens[a + 1:b + 1]
            mask[r, :b - a] = True  # the padded tail of the last row is causal-invisible and unscored
        return TrainingChunk(chunk.index, chunk.doc, (lo, hi), x, y, mask)


class LoRAAdapters:
    """Rank-r adapters added to chosen linear layers by forward hooks: y += (x A^T B^T) alpha / r."""

    def __init__(self, net: nn.Module, targets: Sequence[str], rank: int, alpha: float,
                 seed: int = 0):
        self.scale = alpha / rank
        self.a: dict[str, nn.Parameter] = {}
        self.b: dict[str, nn.Parameter] = {}
        self.handles = []
        gen = torch.Generator().manual_seed(seed)
        roles = net.roles_by_name()  # a projection's TTT name is its weight's role (lora)
        for name, module in net.named_modules():
            if not isinstance(module, nn.Linear) or roles[f"{name}.weight"].lora not in targets:
                continue
            w = module.weight
            bound = 1 / math.sqrt(module.in_features)
            a = (torch.rand(rank, module.in_features, generator=gen) * 2 - 1) * bound
            self.a[name] = nn.Parameter(a.to(w.device))
            self.b[name] = nn.Parameter(torch.zeros(module.out_features, rank, device=w.device))
            self.handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        def add_delta(module, inputs, output):
            x = inputs[0]
            delta = (x @ self.a[name].to(x.dtype).T) @ self.b[name].to(x.dtype).T
            return output + delta * self.scale
        return add_delta

    def parameters(self) -> list[nn.Parameter]:
        return [*self.a.values(), *self.b.values()]

    def reset(self) -> None:
        """Zero B (the adapters add nothing again); A is kept (the records' warm start)."""
        with torch.no_grad():
            for b in self.b.values():
                b.zero_()

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class TTTTrainer:
    """Optimizer steps on `TrainingChunk`s, logging each update."""

    def __init__(self, net: nn.Module, params: EvalParams, num_chunks: int, scores: Scores):
        self.net, self.p, self.num_chunks, self.scores = net, params, num_chunks, scores
        self.lora = None
        if params.ttt_lora_rank > 0:
            for p in net.parameters():
                p.requires_grad_(False)
            self.lora = LoRAAdapters(net, params.ttt_lora_targets, params.ttt_lora_rank,
                                     params.ttt_lora_alpha)
            self.params = self.lora.parameters()
        else:
            frozen = {id(p) for blk in list(net.blocks)[:params.ttt_freeze_blocks]
                      for p in blk.parameters()}
            self.params = [p for p in net.parameters() if id(p) not in frozen]
            for p in net.parameters():
                p.requires_grad_(id(p) not in frozen)
        self.optimizer = self._new_optimizer()
        self.doc = None

    def _new_optimizer(self) -> torch.optim.Optimizer:
        p = self.p
        if p.ttt_optimizer == "sgd":
            return torch.optim.SGD(self.params, lr=p.ttt_lr, momentum=p.ttt_momentum)
        return torch.optim.AdamW(self.params, lr=p.ttt_lr, betas=(p.ttt_momentum, 0.99),
                                 weight_decay=0.0)

    def start_document(self, doc: int) -> None:
        """Before scoring a chunk of `doc`: with LoRA reset, a new document starts from B = 0 and a
        fresh optimizer, so no document is scored with another one's adapters."""
        if self.lora is not None and self.p.ttt_lora_reset and doc != self.doc:
            self.lora.reset()
            self.optimizer = self._new_optimizer()
        self.doc = doc

    def lr(self, chunk_index: int) -> float:
        """Global TTT: cosine from ttt_lr to 0 across chunks; LoRA: constant."""
        if self.lora is not None or self.num_chunks < 2:
            return self.p.ttt_lr
        return self.p.ttt_lr * 0.5 * (1 + math.cos(math.pi * chunk_index / (self.num_chunks - 1)))

    def step(self, chunk: TrainingChunk) -> None:
        """`ttt_epochs` optimizer steps on the chunk's targets (already scored and committed)."""
        if not isinstance(chunk, TrainingChunk):
            raise TypeError("TTT trains only on chunks handed out by ScoredChunks")
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr(chunk.index)
        device = chunk.inputs.device
        for _ in range(self.p.ttt_epochs):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = self.net(chunk.inputs).float()
            nll = nn.functional.cross_entropy(logits.flatten(0, 1), chunk.targets.flatten(),
                                              reduction="none").view_as(chunk.targets)
            loss = (nll * chunk.mask).sum() / chunk.mask.sum()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.p.ttt_grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.params, self.p.ttt_grad_clip)
            self.optimizer.step()
            self.scores.events.append(("update", chunk.index, chunk.span))


def plan_chunks(stream: np.ndarray, params: EvalParams) -> list[Chunk]:
    """The chunks of a TTT pass over the token stream `stream` (N + 1 tokens)."""
    n_targets = len(stream) - 1
    if params.ttt_lora_rank > 0:
        stride = min(params.ttt_chunk_tokens, params.seq_len)
        windows = plan_windows(stream, params.seq_len, stride, doc_isolated=True)
        doc_of_target = np.cumsum(np.asarray(stream[:-1]) == BOS_ID)  # documents begun by t
        return document_chunks(windows, doc_of_target, params.ttt_lora_reset)
    windows = plan_windows(stream, params.seq_len, params.stride, params.doc_isolated)
    return global_chunks(windows, n_targets, params.ttt_chunk_tokens)


def run_ttt(net: nn.Module, tokens: torch.Tensor, params: EvalParams, scores: Scores,
            probes: frozenset[int] = frozenset(),
            on_progress: Callable[[int], None] | None = None) -> None:
    """Score-first TTT over `tokens` (int64, on the net's device) with `net`, a private copy that
    this adapts in place; losses go to `scores`."""
    chunks = plan_chunks(tokens.cpu().numpy(), params)
    predict = model_log_probs(net)
    trainer = TTTTrainer(net, params, len(chunks), scores)

    def score(chunk: Chunk) -> None:
        trainer.start_document(chunk.doc)
        score_windows(predict, tokens, chunk.windows, params.batch_seqs, scores, probes, on_progress)

    try:
        for chunk in ScoredChunks(chunks, tokens, params.seq_len, score, scores):
            trainer.step(chunk)
    finally:
        if trainer.lora is not None:
            trainer.lora.remove()
