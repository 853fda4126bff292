"""Windows over the validation stream and the one function that scores them.

Indexing: the stream has N + 1 tokens and N targets; target `t` is token `t + 1` predicted from
tokens `0..t`. A `Window` feeds tokens `[start, start + length)` to the model and scores the targets
`[start + score_from, start + length)`: the earlier ones only serve as context.

- chunked: windows of `seq_len` one after another, every target scored by the window holding it;
- sliding: a window every `stride` tokens; the first scores all its targets, each later one only the
  targets after the previous window's end (its last `stride` while full), so every scored target has
  at least `seq_len - stride` tokens of context. Starts run while `ws + seq_len - stride < N`. The
  final, shorter window scores from the same local offset as a full one, `seq_len - stride`, which is
  where the previous window stopped: taking `wlen - stride` there, as the records' sliding eval
  does, would score `seq_len - wlen` targets twice. With `stride == seq_len` this is exactly `chunked`.
- document isolation: the stream is cut before every BOS and each document is windowed on its own,
  so no window spans a BOS and attention never sees another document. The BOS that starts a
  document is the target of the previous document's last token, scored with that document's context.

Every target is scored exactly once; `Scores.counts` records it and callers check it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from stages.data.bpb import ByteTable, bits_per_byte, target_bytes
from stages.data.shards import BOS_ID
from stages.errors import GolfError

# (inputs (B, T), targets (B, T)) -> log-probabilities over the vocabulary (B, T, V), fp32. The
# targets are passed so that a scorer's full contract is visible to the audit: a legal predictor
# never reads them (audit.py checks that the distribution ignores them).
Predictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Window:
    start: int  # index of the first input token, which is also the first target index
    length: int  # input tokens = targets in the window
    score_from: int  # local index of the first scored target

    @property
    def scored(self) -> tuple[int, int]:
        """The target indices the window scores, [lo, hi)."""
        return self.start + self.score_from, self.start + self.length


def segments(tokens: np.ndarray, doc_isolated: bool) -> list[tuple[int, int]]:
    """(offset, targets) pieces of the stream to window separately: one, or one per document."""
    n_targets = len(tokens) - 1
    if not doc_isolated:
        return [(0, n_targets)]
    cuts = [int(i) for i in np.flatnonzero(np.asarray(tokens[1:n_targets]) == BOS_ID) + 1]
    bounds = [0, *cuts, n_targets]
    return [(a, b - a) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def sliding_windows(offset: int, n_targets: int, seq_len: int, stride: int) -> list[Window]:
    """Windows over targets [offset, offset + n_targets), each scored once (see the module doc)."""
    windows, ws = [], 0
    while True:
        windows.append(Window(offset + ws, min(seq_len, n_targets - ws),
                              0 if ws == 0 else seq_len - stride))
        if ws + seq_len >= n_targets:  # the next start would score nothing new
            return windows
        ws += stride


def document_chunk_windows(offset: int, n_targets: int, seq_len: int, chunk: int) -> list[Window]:
    """Per-document TTT chunks of one document (targets [offset, offset + n_targets)): chunk c is
    targets [c*chunk, (c+1)*chunk) of the document (the last one shorter), scored with the context
    [max(0, end - seq_len), end) that ends where the chunk ends, so the first chunks of every
    document are small too (the best record's `_compute_chunk_window`)."""
    windows = []
    for lo in range(0, n_targets, chunk):
        end = min(lo + chunk, n_targets)
        start = max(0, end - seq_len)
        windows.append(Window(offset + start, end - start, lo - start))
    return windows


def plan_windows(tokens: np.ndarray, seq_len: int, stride: int, doc_isolated: bool) -> list[Window]:
    """All windows of a scoring pass, in stream order."""
    return [w for off, n in segments(tokens, doc_isolated)
            for w in sliding_windows(off, n, seq_len, stride)]


@dataclass
class Scores:
    """What a scoring pass committed: per-target NLL (nats) and how often each target was scored,
    the full distribution at a few probe targets (for the audit), and the TTT event log."""

    nll: np.ndarray  # float64 [N]
    counts: np.ndarray  # int64 [N]
    probes: dict[int, np.ndarray] = field(default_factory=dict)  # target -> log-probs [V]
    events: list[tuple] = field(default_factory=list)

    @classmethod
    def empty(cls, n_targets: int) -> Scores:
        return cls(np.zeros(n_targets, dtype=np.float64), np.zeros(n_targets, dtype=np.int64))

    def commit(self, lo: int, nll: np.ndarray) -> None:
        """Add the losses of targets [lo, lo + len(nll)) to the totals."""
        self.nll[lo:lo + len(nll)] += nll
        self.counts[lo:lo + len(nll)] += 1

    def check_once(self) -> None:
        if not (self.counts == 1).all():
            bad = int(np.flatnonzero(self.counts != 1)[0])
            raise AssertionError(f"target {bad} was scored {int(self.counts[bad])} times; "
                                 f"every validation target must be scored exactly once")


def model_log_probs(net: torch.nn.Module) -> Predictor:
    """The model's own distribution: log_softmax of its logits (the targets are not read)."""
    def predict(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(net(x).float(), dim=-1)
    return predict


def _batches(windows: Sequence[Window], batch_seqs: int) -> Iterable[list[Window]]:
    """Batches of windows of one length (only a document's or the stream's tail is shorter)."""
    for i in range(0, len(windows), batch_seqs):
        group = windows[i:i + batch_seqs]
        for length in sorted({w.length for w in group}, reverse=True):
            yield [w for w in group if w.length == length]


def score_windows(predict: Predictor, tokens: torch.Tensor, windows: Sequence[Window],
                  batch_seqs: int, scores: Scores, probes: frozenset[int] = frozenset(),
                  on_progress: Callable[[int], None] | None = None) -> None:
    """Score `windows` under inference mode and commit each window's scored targets to `scores`.

    `tokens` is the int64 stream on the device the predictor runs on; log-probs of the targets in
    `probes` are kept whole for the audit.
    """
    device = tokens.device
    use_bf16 = device.type == "cuda"
    with torch.inference_mode():
        for batch in _batches(windows, batch_seqs):
            x = torch.stack([tokens[w.start:w.start + w.length] for w in batch])
            y = torch.stack([tokens[w.start + 1:w.start + 1 + w.length] for w in batch])
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                logp = predict(x, y)
            nll = -logp.gather(-1, y[..., None]).squeeze(-1).double().cpu().numpy()
            for row, w in enumerate(batch):
                lo, hi = w.scored
                scores.commit(lo, nll[row, w.score_from:])
                for t in probes.intersection(range(lo, hi)):
                    scores.probes[t] = logp[row, t - w.start].double().cpu().numpy()
            if on_progress:
                on_progress(len(batch))


def stream_target_bytes(tokens: torch.Tensor, table: ByteTable) -> np.ndarray:
    """Bytes of every target of the stream (int64 [N]), by the byte-table rule of bpb.py."""
    tokens = tokens.cpu()
    return target_bytes(tokens[:-1], tokens[1:], table).numpy()


def totals(scores: Scores, tokens: torch.Tensor, table: ByteTable) -> dict:
    """val_loss, val_bpb, token and byte counts of a finished pass over the stream `tokens`.

    Bytes are those of the targets actually scored, each once, so the total is the same in every
    mode and equals the byte table's total over the stream.
    """
    scores.check_once()
    byte_sum = int((stream_target_bytes(tokens, table) * scores.counts).sum())
    if byte_sum <= 0:
        raise GolfError("the validation targets carry no bytes; is the tokenizer right?")
    nll_sum, scored = float(scores.nll.sum()), int(scores.counts.sum())
    return {"val_loss": nll_sum / scored, "val_bpb": bits_per_byte(nll_sum, byte_sum),
            "tokens": scored, "bytes": byte_sum}
