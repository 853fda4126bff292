"""What the checks of `golf audit` share: a check's verdict, the scoring pass they probe, and how
they perturb a token."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from stages.data.shards import BOS_ID
from stages.eval.scoring import Scores

TOLERANCE = 1e-5  # the same computation on the same inputs: only a real dependence moves a score
NORM_TOLERANCE = 1e-4

# A scoring pass: token stream (int64, CPU) and probe targets -> what it committed.
Evaluator = Callable[[torch.Tensor, frozenset[int]], Scores]


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


def replace_token(tokens: torch.Tensor, u: int, vocab: int, rng: np.random.Generator) -> torch.Tensor:
    """A copy with token u replaced by another id that is not BOS (document structure unchanged)."""
    new = int(tokens[u])
    while new in (int(tokens[u]), BOS_ID):
        new = int(rng.integers(0, vocab))
    out = tokens.clone()
    out[u] = new
    return out
