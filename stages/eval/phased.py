"""Phased TTT: global SGD of the whole model over documents already scored, between LoRA batches.

The per-document LoRA pass takes documents longest first. Once the first `boundary[p]` documents
of that order have been scored (boundaries prefix * (p + 1) / phases), it pauses and runs one phase
of global SGD over exactly those documents; the documents after that are scored by the updated
model (with fresh adapters). As in the best record (`eval_val_ttt_phased`), the check runs after
each batch, so a phase may start a few documents past its boundary; the documents it trains on
are the first `boundary[p]` ones ordered by (batch in length order, position in batch).

One phase (the record's `train_val_ttt_global_sgd_distributed`): the documents' tokens are
concatenated, each with its closing token (the next BOS); the stream is cut into chunks of
`ttt_phased_chunk_tokens` targets and each chunk but the last is one SGD step (momentum, LR
cosine-decayed across the phase's chunks, gradient norm clipped) over its whole `seq_len` rows.
The chunk's tokens are packed into `seq_len` rows and attention stops at every BOS and at every row
start (the model's document-isolated attention, as the record's cu_seqlens cut at every BOS and
every `seq_len` tokens), so no position is padding: giving each document its own padded row
instead costs about seq_len / (mean document length) times the compute and memory. Unlike the
record, a row that starts inside a document starts without that document's earlier tokens (the
record cuts a long document every `seq_len` tokens from its start). Only targets of the stream
are trained on: the pair (closing BOS, the next document's BOS) that concatenation creates is
left out.

Legality is structural: `global_sgd` takes only `ScoredDocuments`, which refuses a span with a
target not scored exactly once, and logs each step with the stream spans it used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stages.eval.params import EvalParams
from stages.eval.scoring import Scores


def phase_boundaries(n_docs: int, params: EvalParams) -> list[int]:
    """Documents scored before each phase: prefix * (p + 1) // phases (none without phases)."""
    prefix = min(n_docs, params.ttt_phased_prefix_docs)
    if prefix == 0:
        return []
    n = params.ttt_phased_phases
    return [prefix * (p + 1) // n for p in range(n)]


class PhaseSchedule:
    """Which documents each phase trains on; told about every batch once it is scored."""

    def __init__(self, n_docs: int, params: EvalParams):
        self.boundaries = phase_boundaries(n_docs, params)
        self.phase = 0
        self._scored: list[tuple[int, int, int]] = []  # (batch rank by length, position, doc)

    def after_batch(self, rank: int, docs: Sequence[int]) -> list[int] | None:
        """The documents of the phase due now that batch `docs` is scored, or None."""
        if self.phase >= len(self.boundaries):
            return None
        self._scored += [(rank, pos, d) for pos, d in enumerate(docs)]
        boundary = self.boundaries[self.phase]
        if len(self._scored) < boundary:
            return None
        self.phase += 1
        return [d for _, _, d in sorted(self._scored)[:boundary]]


class ScoredDocuments:
    """Target spans [lo, hi) of documents all of whose targets are scored and committed."""

    def __init__(self, spans: Sequence[tuple[int, int]], scores: Scores):
        for lo, hi in spans:
            if not (scores.counts[lo:hi] == 1).all():
                raise AssertionError(f"targets {lo}..{hi} are not all scored: phased TTT trains "
                                     f"only on scored documents")
        self.spans = tuple(spans)


def _runs(positions: np.ndarray) -> list[tuple[int, int]]:
    """Sorted distinct ints as [lo, hi) runs."""
    if not len(positions):
        return []
    breaks = np.flatnonzero(np.diff(positions) != 1) + 1
    return [(int(r[0]), int(r[-1]) + 1) for r in np.split(positions, breaks)]


def global_sgd(net: nn.Module, tokens: torch.Tensor, docs: ScoredDocuments, params: EvalParams,
               scores: Scores, phase: int) -> int:
    """One phase of global SGD over the scored documents `docs`; returns the steps taken."""
    if not isinstance(docs, ScoredDocuments):
        raise TypeError("phased TTT trains only on ScoredDocuments")
    if not docs.spans:
        return 0
    origin = np.concatenate([np.arange(lo, hi + 1) for lo, hi in docs.spans])  # stream position
    flat = tokens[torch.from_numpy(origin).to(tokens.device)]
    # A flat pair (i, i + 1) is stream target origin[i] only where the stream continues there.
    is_target = np.diff(origin) == 1
    seq_len, chunk = params.seq_len, params.ttt_phased_chunk_tokens
    n_targets = len(flat) - 1
    num_chunks = math.ceil(n_targets / chunk)
    params_all = list(net.parameters())
    for p in params_all:
        p.requires_grad_(True)
    # Training mode with document-isolated attention: the packed rows' documents stay apart.
    was_training, was_isolated = net.training, net.doc_attention
    net.train()
    net.set_document_attention(True)
    opt = torch.optim.SGD(params_all, lr=params.ttt_phased_lr, momentum=params.ttt_phased_momentum)
    device, steps = tokens.device, 0
    try:
        for ci in range(num_chunks - 1):  # the last chunk is not trained on (as the record)
            lo = ci * chunk
            rows = (min(lo + chunk, n_targets) - lo) // seq_len  # whole rows only
            if rows == 0:
                continue
            hi = lo + rows * seq_len
            x = flat[lo:hi].view(rows, seq_len)  # (rows, seq_len) packed documents
            y = flat[lo + 1:hi + 1].view(rows, seq_len)
            mask = torch.from_numpy(is_target[lo:hi]).to(device).view(rows, seq_len)
            lr = params.ttt_phased_lr * 0.5 * (1 + math.cos(math.pi * ci / max(num_chunks - 1, 1)))
            for group in opt.param_groups:
                group["lr"] = lr
            for _ in range(params.ttt_phased_epochs):
                with torch.autocast(device.type, dtype=torch.bfloat16,
                                    enabled=device.type == "cuda"):
                    logits = net(x).float()  # (rows, seq_len, V)
                nll = F.cross_entropy(logits.flatten(0, 1), y.flatten(),
                                      reduction="none").view_as(y)
                loss = (nll * mask).sum() / mask.sum().clamp(min=1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if params.ttt_phased_grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params_all, params.ttt_phased_grad_clip)
                opt.step()
                steps += 1
                used = origin[lo:hi][is_target[lo:hi]]
                scores.events.append(("update", f"phase {phase} chunk {ci}",
                                      _runs(np.sort(used))))
    finally:
        for p in params_all:
            p.requires_grad_(False)
        net.train(was_training)
        net.set_document_attention(was_isolated)
    return steps
