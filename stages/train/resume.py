"""Resumable training state: one file, RUN_DIR/resume/state.pt, written atomically.

It holds everything the next step depends on: model weights, optimizer states, the EMA, the
sampler's state (its RNG, or its place in the token stream), torch's RNG states, the step and
token counters, the elapsed training time and the QAT / looping switches (SWA needs nothing more:
snapshots are already on disk and are taken on a step schedule). A fingerprint of the train and
model params and of the train shards is stored with it; resuming under any other fingerprint is
refused, since the continued run would be neither the old one nor a new one (only
checkpoint_every, val_every and log_every may change).

The file is read weights-only (never unpickling code); a file that is damaged, not golf's, or holds
something else than the state of this model is a one-line ResumeError.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from stages.errors import GolfError
from stages.files import write_bytes_atomic
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
    buffer = io.BytesIO()
    torch.save({"fingerprint": fp, "state": state}, buffer)
    write_bytes_atomic(path, buffer.getvalue())  # a failed write names the file
    return path


def load_state(resume_dir: str | os.PathLike, fp: dict) -> dict[str, Any]:
    """The saved state, after checking that it was saved under the same fingerprint."""
    path = Path(resume_dir) / STATE_FILE
    if not path.is_file():
        raise ResumeError(f"{path}: no resume state (train.checkpoint_every writes it)")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles: the error says it
            warnings.simplefilter("ignore")
            saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for damaged or foreign pickles
        raise ResumeError(f"{path}: not a resume state golf can read ({type(e).__name__}); "
                          f"start afresh without --resume") from None
    if not (isinstance(saved, dict) and isinstance(saved.get("fingerprint"), dict)
            and isinstance(saved.get("state"), dict)):
        raise ResumeError(f"{path}: not a resume state written by golf train; start afresh "
                          f"without --resume")
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


def capture(model: torch.nn.Module, optimizers, ema, sampler, progress: dict) -> dict:
    """Everything the next step depends on, as picklable CPU objects; `progress` holds the run's
    counters (loop.RunState as a dict)."""
    return {
        "model": {n: t.detach().cpu().clone() for n, t in model.state_dict().items()},
        "optimizers": [opt.state_dict() for opt in optimizers],
        "ema": [t.cpu().clone() for t in ema],
        "sampler": sampler.state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "progress": progress,
    }


def restore(saved: dict, model: torch.nn.Module, optimizers, ema, sampler) -> dict:
    """Load a `capture` dict back into freshly built objects; return the run's counters."""
    try:
        return _restore(saved, model, optimizers, ema, sampler)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        raise ResumeError(f"the resume state does not fit this model and run "
                          f"({type(e).__name__}); start afresh without --resume") from None


def _restore(saved: dict, model: torch.nn.Module, optimizers, ema, sampler) -> dict:
    model.load_state_dict(saved["model"])
    for opt, opt_state in zip(optimizers, saved["optimizers"], strict=True):
        opt.load_state_dict(opt_state)
    with torch.no_grad():
        for t, s in zip(ema, saved["ema"], strict=True):
            t.copy_(s)
    sampler.restore(saved["sampler"])
    torch.set_rng_state(saved["torch_rng"])
    if saved["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    return saved["progress"]
