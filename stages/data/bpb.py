"""Bytes per token for val_bpb, from the tokenizer's pieces (the rule of the challenge's
`build_sentencepiece_luts`).

val_bpb = (sum of token NLL in nats / ln 2) / (sum of token bytes). A mistake here silently
"improves" the score, so the rule is written once, here, and tested against real UTF-8 lengths.

For a target token `t` that follows `prev`:

    bytes(t | prev) = base_bytes[t] + (has_leading_space[t] and not is_boundary[prev])

- control, unknown and unused ids (pad, bos, eos, unk) are boundaries and carry 0 bytes;
- byte-fallback ids `<0xNN>` carry exactly 1 byte;
- any other piece carries the UTF-8 length of its surface text, where the whitespace marker U+2581
  stands for one space; a single leading marker is split off into `has_leading_space`.

The official tokenizer only has the marker at the start of a piece, so this equals its rule. golf's own
tokenizers are lossless (whitespace runs kept), so they may have pieces such as "▁▁▁" whose surface
is three spaces: counting the marker as one byte keeps the total equal to the raw UTF-8 length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

SPACE_MARKER = "\u2581"


@dataclass(frozen=True)
class ByteTable:
    base_bytes: np.ndarray  # int64 [vocab]
    has_leading_space: np.ndarray  # bool [vocab]
    is_boundary: np.ndarray  # bool [vocab]


def build_byte_table(sp) -> ByteTable:
    """Byte table of a SentencePieceProcessor."""
    n = sp.get_piece_size()
    base = np.zeros(n, dtype=np.int64)
    lead = np.zeros(n, dtype=bool)
    boundary = np.zeros(n, dtype=bool)
    for i in range(n):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            boundary[i] = True
            continue
        if sp.is_byte(i):
            base[i] = 1
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith(SPACE_MARKER):
            lead[i] = True
            piece = piece[1:]
        base[i] = len(piece.replace(SPACE_MARKER, " ").encode("utf-8"))
    return ByteTable(base, lead, boundary)


def target_bytes(prev: torch.Tensor, tgt: torch.Tensor, table: ByteTable) -> torch.Tensor:
    """Bytes of each target token given the token before it (any matching shapes, int64 out)."""
    base = torch.as_tensor(table.base_bytes, device=tgt.device)
    lead = torch.as_tensor(table.has_leading_space, device=tgt.device)
    boundary = torch.as_tensor(table.is_boundary, device=tgt.device)
    tgt = tgt.long()
    prev = prev.long()
    return base[tgt] + (lead[tgt] & ~boundary[prev]).long()


def stream_bytes(tokens: np.ndarray, table: ByteTable) -> int:
    """Total bytes of every target in a token stream (each position after the first)."""
    t = torch.as_tensor(np.asarray(tokens, dtype=np.int64))
    if t.numel() < 2:
        return 0
    return int(target_bytes(t[:-1], t[1:], table).sum())


def bits_per_byte(total_nll_nats: float, total_bytes: int) -> float:
    return total_nll_nats / math.log(2) / total_bytes
