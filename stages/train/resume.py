"""Resumable training state: one file, RUN_DIR/resume/state.pt, written atomically.

It holds everything the next step depends on: model weights, optimizer states, the EMA, the
sampler's and torch's RNG states, the step and token counters, the elapsed training time and the
QAT / looping switches (SWA needs nothing more: snapshots are already on disk and are taken on a
step schedule). A fingerprint of the train and model params and of the train shards is stored with
it; resuming under any other fingerprint is refused, since the continued run would be neither the
old one nor a new one (only checkpoint_every, val_every and log_every may change).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from stages.errors import GolfError
from stages.files import atomic_path
from stages.train.params import TrainParams

STATE_FILE = "state.pt"


class ResumeError(GolfError):
    """Missing resume state, or state saved under different params or data."""


def fingerprint(resolved_params: dict, shard_hashes: tuple[str, ...] | list[str]) -> dict:
    """What a resumed run must share with the interrupted one: params, model config, train data."""
    params = dict(resolved_params)
    params["train"] = {k: v for k, v in params["train"].items()
                       if k not in TrainParams.NEUTRAL_KEYS}
    return {"params": params, "train_shards": list(shard_hashes)}


def save_state(resume_dir: str | os.PathLike, state: dict[str, Any], fp: dict) -> Path:
    """Write `state` (tensors, optimizer state dicts, plain values) with its fingerprint."""
    path = Path(resume_dir) / STATE_FILE
    with atomic_path(path) as tmp:
        torch.save({"fingerprint": fp, "state": state}, tmp)
    return path


def load_state(resume_dir: str | os.PathLike, fp: dict) -> dict[str, Any]:
    """The saved state, after checking that it was saved under the same fingerprint."""
    path = Path(resume_dir) / STATE_FILE
    if not path.is_file():
        raise ResumeError(f"{path}: no resume state (train.checkpoint_every writes it)")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    differs = differing_keys(saved["fingerprint"], fp)
    if differs:
        raise ResumeError(f"{path} was saved under different {', '.join(differs)}; "
                          f"resume with the same params and data, or start afresh")
    return saved["state"]


def differing_keys(saved: dict, current: dict) -> list[str]:
    """Dotted names of the differing fingerprint entries ('train.matrix_lr', 'train_shards')."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [k if key == "params" else f"{key}.{k}" for k in differing_keys(a, b)]
        elif a != b:
            out.append(key)
    return out


def remove_state(resume_dir: str | os.PathLike) -> None:
    """Drop the resume state of a finished run (its final checkpoints supersede it)."""
    path = Path(resume_dir) / STATE_FILE
    path.unlink(missing_ok=True)
    try:
        Path(resume_dir).rmdir()
    except OSError:  # not empty (something else lives there) or already gone
        pass
