"""Input-side features of the record stacks: BigramHash, value embeddings, SmearGate (the best
record's, and the older blend of PR #401's lineage).

Each reads the token ids, so each must respect document boundaries: a BOS starts a document, and
nothing of the previous document may reach it (golf audit's document-isolation check probes this).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from stages.data.shards import BOS_ID
from stages.model.roles import CONTROL, Role, matrix, table

GATE_INPUT_DIMS = 12  # the gates of the records read only the first 12 channels
# BigramHash multipliers of the records: bucket = (A * cur XOR B * prev) mod (K - 1).
BIGRAM_HASH_CUR, BIGRAM_HASH_PREV = 36313, 27191


def init_feature_projection(proj: nn.Linear, num_layers: int) -> None:
    """Orthogonal, scaled by 1/sqrt(2 L): how every record with BigramHash or value embeddings
    initialises their projections (their `_init_weights`, e.g. PR #401's GPT, on every Linear of at
    least 64 x 64 without `_zero_init`, the `.proj` ones scaled). Unconditional here, whatever the
    size: with the zero-init table of BigramHash a zero projection would be a saddle where both
    gradients are exactly 0 forever."""
    nn.init.orthogonal_(proj.weight, gain=1.0)
    with torch.no_grad():
        proj.weight.mul_(1.0 / math.sqrt(2 * num_layers))


def bigram_buckets(idx: torch.Tensor, buckets: int) -> torch.Tensor:
    """BigramHash bucket of each position (B, T): (36313 cur XOR 27191 prev) mod (K - 1), and bucket
    K - 1 at position 0 and wherever the current token is BOS, so no position ever hashes a token of
    the previous document."""
    cur = idx.long()
    prev = F.pad(cur[:, :-1], (1, 0))  # (B, T): the token before each position, 0 before the first
    hashed = torch.bitwise_xor(BIGRAM_HASH_CUR * cur, BIGRAM_HASH_PREV * prev) % (buckets - 1)
    no_previous = cur == BOS_ID
    no_previous[:, 0] = True
    return hashed.masked_fill(no_previous, buckets - 1)


class BigramHash(nn.Module):
    """Hashed (previous, current) token pair embedding, projected to the model width and scaled.
    The table starts at zero, so it adds nothing at init; the projection does not (see
    `init_feature_projection`), so the table's gradient is non-zero from the first step."""

    def __init__(self, buckets: int, dim: int, model_dim: int, num_layers: int):
        super().__init__()
        self.buckets = buckets
        self.embed = nn.Embedding(buckets, dim)
        nn.init.zeros_(self.embed.weight)
        self.proj = nn.Linear(dim, model_dim, bias=False)
        init_feature_projection(self.proj, num_layers)
        self.scale = nn.Parameter(torch.full((1,), 0.05))

    def roles(self) -> dict[str, Role]:
        return {"embed.weight": table(), "proj.weight": matrix(), "scale": CONTROL}

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.scale * self.proj(self.embed(bigram_buckets(idx, self.buckets)))  # (B, T, d)


class ValueEmbedding(nn.Module):
    """A token table shared by the chosen layers, projected to the value width and scaled; each of
    those layers adds it to its values times its own `ve_lambda`. Table N(0, 0.01) and projection
    as `init_feature_projection`, as the records: it already adds to the values at init."""

    def __init__(self, vocab_size: int, dim: int, kv_dim: int, num_layers: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        nn.init.normal_(self.embed.weight, std=0.01)
        self.proj = nn.Linear(dim, kv_dim, bias=False)
        init_feature_projection(self.proj, num_layers)
        self.scale = nn.Parameter(torch.full((1,), 0.1))

    def roles(self) -> dict[str, Role]:
        return {"embed.weight": table(), "proj.weight": matrix(), "scale": CONTROL}

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.scale * self.proj(self.embed(idx))  # (B, T, kv_dim)


def smear(x: torch.Tensor, idx: torch.Tensor, w: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """SmearGate (modded-nanogpt's, with the BOS mask of the best record): for x (B, T, d),
    x_t += lam * sigmoid(w . x_t[:12]) * x_{t-1} * [id_t != BOS]; never mixes documents."""
    gate = torch.sigmoid(x[..., :GATE_INPUT_DIMS] @ w.to(x.dtype))[..., None]  # (B, T, 1)
    prev = F.pad(x[:, :-1], (0, 0, 1, 0))  # x_{t-1}, zero before the first position
    not_bos = (idx != BOS_ID).to(x.dtype)[..., None]  # (B, T, 1)
    return x + lam.to(x.dtype) * gate * prev * not_bos


def smear_blend(x: torch.Tensor, idx: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """SmearGate of PR #401's lineage, on the normalised embedding x (B, T, d): with a per-channel
    g = sigmoid(gate) (0.5 at init), x_t <- (1 - g) x_t + g x_{t-1}, x_{-1} = 0. The record has no
    BOS mask; here a BOS row is kept as it is, so it never takes the previous document's last token
    (the one position per document where this differs from the record)."""
    g = torch.sigmoid(gate.to(x.dtype))  # (d,)
    prev = F.pad(x[:, :-1], (0, 0, 1, 0))  # x_{t-1}, zero before the first position
    not_bos = (idx != BOS_ID).to(x.dtype)[..., None]  # (B, T, 1)
    return x + not_bos * g * (prev - x)
