"""The train shards read in order as one token stream, as the baseline's `TokenStream` reads them.

The train shards, concatenated in file order, form a ring: reading never repeats a token before the
whole ring has been read, and continues from its start after the end (the next epoch). Each row of a
batch is the next `seq_len + 1` tokens (inputs and their shifted targets), so consecutive rows do
not share tokens: one epoch reads every train token exactly once, in order. This is the baseline's
layout whenever each rank's micro-batch is one row (its `DistributedTokenLoader` takes one span of
`local_tokens + 1` per rank and micro-step); with several rows per micro-batch the baseline's rows
share their boundary token, one token in `seq_len` that is an input here and only a target there.

Every rank reads the same global batch and keeps its own slice of rows (distributed.local_part), so
the rows of the ranks partition the batch and N processes train on exactly the rows one process
would. The whole state is the number of tokens read so far, which is what resume saves.
"""

from __future__ import annotations

import numpy as np
import torch

from stages.data.shards import ShardError, TrainTokens


class SequentialSampler:
    """Consecutive (x, y) rows of `seq_len` tokens from the train shards, in order, wrapping."""

    def __init__(self, data: TrainTokens, seq_len: int):
        if not isinstance(data, TrainTokens):
            raise TypeError("SequentialSampler reads TrainTokens only; validation tokens are never "
                            "trained on")
        self.shards = [s for s in data.shards if s.size]
        self.total = sum(int(s.size) for s in self.shards)
        # A row longer than the stream would read some tokens twice within one row.
        if self.total < seq_len + 1:
            raise ShardError(f"the train shards hold {self.total} tokens, fewer than one row of "
                             f"seq_len + 1 = {seq_len + 1}")
        # The stream offset at which each shard starts.
        self.starts = np.cumsum([0] + [int(s.size) for s in self.shards])
        self.seq_len = seq_len
        self.tokens_read = 0

    @property
    def epoch(self) -> float:
        """How many times the stream has been read (fractional)."""
        return self.tokens_read / self.total

    def take(self, n: int) -> np.ndarray:
        """The next `n` tokens of the ring, as int64."""
        out = np.empty(n, dtype=np.int64)
        filled = 0
        while filled < n:
            pos = self.tokens_read % self.total
            k = int(np.searchsorted(self.starts, pos, side="right")) - 1  # shard holding `pos`
            offset = pos - int(self.starts[k])
            count = min(n - filled, self.shards[k].size - offset)
            out[filled:filled + count] = self.shards[k][offset:offset + count]
            filled += count
            self.tokens_read += count
        return out

    def sample(self, num_seqs: int) -> tuple[torch.Tensor, torch.Tensor]:
        span = self.seq_len + 1
        rows = torch.from_numpy(self.take(num_seqs * span)).view(num_seqs, span)  # (B, T + 1)
        return rows[:, :-1], rows[:, 1:]

    def state(self) -> dict:
        return {"kind": "sequential", "tokens_read": self.tokens_read}

    def restore(self, state: dict) -> None:
        if state.get("kind") != "sequential":
            raise ValueError("not a sequential sampler's state")
        self.tokens_read = int(state["tokens_read"])
