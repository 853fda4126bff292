"""`golf average`: uniform or weighted average of compatible checkpoints.

Checkpoints are compatible when they have the same model config, the same tensor names and shapes,
and were trained with the same tokenizer (the same vocabulary size is not enough: id 17 would mean
two different pieces); anything else is refused, since such an average has no meaning.

The average's provenance keeps every input's: the entries all inputs share once at the top (the
tokenizer, the train data when it is the same), and each input's whole provenance under `inputs`,
so that what any of them was trained on stays on record (`golf audit` checks them all).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

import torch

from stages.artifacts import Artifact
from stages.errors import GolfError
from stages.params import Range, check, param, to_dict, validate


class AverageError(GolfError):
    """Checkpoints that cannot be averaged together."""


@dataclass(frozen=True)
class AverageParams:
    """The `average` section."""

    SECTION: ClassVar[str] = "average"

    weights: list[Annotated[float, Range(0)]] = param(
        [], "one weight per input checkpoint, normalised to sum 1; empty = uniform")

    def __post_init__(self) -> None:
        validate(self)
        check(not self.weights or sum(self.weights) > 0, "average.weights must not all be zero")


def average(checkpoints: list[tuple[str, Artifact]], params: AverageParams, *,
            parents: dict[str, str]) -> Artifact:
    """Average `(name, checkpoint)` pairs (names appear in errors) with `params.weights`."""
    if not checkpoints:
        raise AverageError("average needs at least one checkpoint")
    weights = params.weights or [1.0] * len(checkpoints)
    if len(weights) != len(checkpoints):
        raise AverageError(f"average.weights has {len(weights)} values for {len(checkpoints)} "
                           f"checkpoints")
    total = sum(weights)
    weights = [w / total for w in weights]
    first_name, first = checkpoints[0]
    for name, ckpt in checkpoints:
        if ckpt.kind != "checkpoint":
            raise AverageError(f"{name}: expected a checkpoint artifact, got {ckpt.kind}")
        if ckpt.model_config != first.model_config:
            diff = [k for k in vars(first.model_config)
                    if getattr(first.model_config, k) != getattr(ckpt.model_config, k)]
            raise AverageError(f"{name}: model config differs from {first_name} "
                               f"({', '.join(f'model.{k}' for k in diff)})")
        shapes = {k: tuple(v.shape) for k, v in ckpt.tensors.items()}
        if shapes != {k: tuple(v.shape) for k, v in first.tensors.items()}:
            raise AverageError(f"{name}: tensor names or shapes differ from {first_name}")
    _check_tokenizers(checkpoints)
    averaged = {}
    for key, ref in first.tensors.items():
        acc = torch.zeros(ref.shape, dtype=torch.float64)
        for w, (_, ckpt) in zip(weights, checkpoints, strict=True):
            acc += w * ckpt.tensors[key].double()
        averaged[key] = acc.to(ref.dtype)
    return Artifact("checkpoint", averaged, first.model_config,
                    params={"average": to_dict(params), **first.params},
                    parents=parents, provenance=merged_provenance(checkpoints, weights))


def _check_tokenizers(checkpoints: list[tuple[str, Artifact]]) -> None:
    first_name, first = checkpoints[0]
    ours = first.provenance.get("tokenizer_sha256")
    for name, ckpt in checkpoints[1:]:
        theirs = ckpt.provenance.get("tokenizer_sha256")
        if ours and theirs and theirs != ours:
            raise AverageError(f"{name} was trained with tokenizer {str(theirs)[:19]}…, "
                               f"{first_name} with {str(ours)[:19]}…: the same ids are different "
                               f"pieces, so their average has no meaning")


def merged_provenance(checkpoints: list[tuple[str, Artifact]], weights: list[float]) -> dict:
    """What every input shares, the weight of each, and each input's whole provenance."""
    records = [c.provenance for _, c in checkpoints]
    shared = {k: v for k, v in records[0].items()
              if k not in ("weights", "train_steps") and all(r.get(k) == v for r in records[1:])}
    return {**shared,
            "averaged": [{"weights": r.get("weights"), "weight": w}
                         for w, r in zip(weights, records, strict=True)],
            "inputs": records}
