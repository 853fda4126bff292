"""Periodic validation during training (`train.val_every`): val_loss and val_bpb of the model as it
trains (its current layout and QAT state), over the whole validation split.

train() never holds validation tokens: the caller builds this callback from a data directory and
passes it in, and the loop calls it in eval mode under inference_mode with the RNG restored after.

The split is scored in consecutive windows of the training length, every target once, with bytes
from the tokenizer's byte table: the same numbers `golf eval --mode chunked` gives at that
sequence length (tests/train/test_validation.py holds the two to each other). The scoring is the
few lines of chunked scoring rather than an import of the eval package, so that editing eval does
not rerun training.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stages.data.bpb import bits_per_byte, build_byte_table, target_bytes
from stages.data.shards import find_tokenizer, load_tokenizer, load_val_tokens
from stages.train.params import TrainParams

BATCH_SEQS = 16


def chunked_nll(net: nn.Module, tokens: torch.Tensor, seq_len: int,
                batch_seqs: int = BATCH_SEQS) -> np.ndarray:
    """NLL in nats (float64 [N]) of every target of the stream `tokens` (N + 1 ids, on the net's
    device), scored in consecutive windows of `seq_len` (the last one shorter)."""
    n = tokens.numel() - 1
    nll = np.zeros(n, dtype=np.float64)
    starts = list(range(0, n, seq_len))
    use_bf16 = tokens.device.type == "cuda"
    for i in range(0, len(starts), batch_seqs):
        batch = starts[i:i + batch_seqs]
        for length in sorted({min(seq_len, n - s) for s in batch}, reverse=True):
            group = [s for s in batch if min(seq_len, n - s) == length]
            x = torch.stack([tokens[s:s + length] for s in group])  # (B, T)
            y = torch.stack([tokens[s + 1:s + 1 + length] for s in group])  # (B, T)
            with torch.autocast(tokens.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                logp = F.log_softmax(net(x).float(), dim=-1)  # (B, T, V)
            rows = -logp.gather(-1, y[..., None]).squeeze(-1).double().cpu().numpy()
            for row, s in enumerate(group):
                nll[s:s + length] = rows[row]
    return nll


def build_validator(data_dir: str | os.PathLike, params: TrainParams,
                    vocab: int | None = None) -> Callable[[nn.Module], dict]:
    """A `validate(model) -> {'val_loss', 'val_bpb'}` callback over `data_dir`'s validation split
    (with `vocab`, every token id is checked to be below it)."""
    table = build_byte_table(load_tokenizer(find_tokenizer(data_dir)))
    stream = torch.from_numpy(load_val_tokens(data_dir, vocab).concatenated().astype(np.int64))
    byte_sum = int(target_bytes(stream[:-1], stream[1:], table).sum())

    def validate(model: nn.Module) -> dict:
        device = next(model.parameters()).device
        nll = chunked_nll(model, stream.to(device), params.seq_len)
        nll_sum = float(nll.sum())
        return {"val_loss": round(nll_sum / nll.size, 6),
                "val_bpb": round(bits_per_byte(nll_sum, byte_sum), 6)}

    return validate
