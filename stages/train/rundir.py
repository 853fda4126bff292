"""The run folder of `golf train`: a new run is built beside the last finished one and moved into
place only once it has finished.

    RUN_DIR/
        final.safetensors, ema.safetensors, train_metrics.json, live/, swa/   the last finished run
        resume/    the run in progress (or interrupted): state.pt every train.checkpoint_every
                   steps, its live/ curves and swa/ snapshots so far

- While a run trains it writes into RUN_DIR/resume/ only: the previous run's checkpoints, curves
  and snapshots stay as they are until the new run has finished, and for good if it fails.
- Finishing writes final.safetensors, ema.safetensors and train_metrics.json into resume/, then a
  `finished` mark (which records the inode of each staged folder), then moves swa/, live/, the
  checkpoints and the metrics into RUN_DIR one by one, each in one atomic step (a folder is
  exchanged with the older one, which is then deleted; where the filesystem cannot exchange, the
  older one is set aside first), and only then deletes resume/ with its state: the resume state
  lives until the final artifacts are in place.
- Killed while moving, the next `golf train` into RUN_DIR completes the moves first: the inodes
  in the mark tell a folder already moved from one still to move, so each move can be done again.
  Killed earlier, a fresh run clears resume/ and `--resume` continues from it (the curves' rows
  past the saved step are dropped, livelog.py). A run that fails with no state to resume from
  leaves nothing behind; one that has a state keeps resume/ for `--resume`.
- One run at a time: the training process holds a lock on resume/, and a second one is refused.
- Nothing else in RUN_DIR is touched (DVC's .gitignore, the seeds study's averaged.safetensors).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from stages import files
from stages.files import OutputError, check_not_cwd, is_held, lock, write_bytes_atomic

STAGING = "resume"
FINISHED = "finished"
STATE = "state.pt"
# What a finished run moves into RUN_DIR, in this order (the metrics last).
PRODUCTS = ("swa", "live", "ema.safetensors", "final.safetensors", "train.log",
            "train_metrics.json")


def check_run_dir(run_dir: Path, shown: str | os.PathLike) -> None:
    """RUN_DIR is a folder (or nothing yet), not the current folder or one holding it."""
    check_not_cwd(run_dir, shown)
    if run_dir.exists() and not run_dir.is_dir():
        raise OutputError(f"--out {shown} exists and is not a folder")


def _move_folder(src: Path, dst: Path, inode: int | None) -> None:
    """Put the staged folder `src` at `dst` in one step; nothing if the mark says it is there."""
    if dst.is_dir() and dst.stat().st_ino == inode:  # moved already: `src` is the older one
        files.remove(src)
    elif not src.exists():
        return
    elif not dst.exists():
        files.rename(src, dst)
    elif files.exchange(src, dst):
        files.remove(src)  # now the older folder
    else:  # no atomic exchange here: set the older one aside first
        old = src.with_name(f"{src.name}.old")
        files.remove(old)
        files.rename(dst, old)
        files.rename(src, dst)
        files.remove(old)


def _move_into_place(run_dir: Path) -> None:
    """Move a finished run's products from resume/ into RUN_DIR (again, after a kill)."""
    staging = run_dir / STAGING
    inodes = json.loads((staging / FINISHED).read_text())
    for name in PRODUCTS:
        src, dst = staging / name, run_dir / name
        if name in inodes:
            _move_folder(src, dst, inodes[name])
        elif src.exists():
            files.rename(src, dst)
    files.remove(staging)


def recover(run_dir: Path) -> None:
    """Complete the moves of a finished run that was killed while being moved into place."""
    staging = run_dir / STAGING
    if (staging / FINISHED).is_file() and not is_held(staging):
        _move_into_place(run_dir)


@contextlib.contextmanager
def staging_for(run_dir: Path, resume: bool) -> Iterator[Path]:
    """RUN_DIR/resume/, locked for this run: emptied for a fresh run, kept for `--resume`. If the
    block fails it is deleted, unless it holds a state to resume from (or a finished run)."""
    recover(run_dir)
    created = not run_dir.exists()
    staging = run_dir / STAGING
    staging.mkdir(parents=True, exist_ok=True)
    fd = lock(staging)
    try:
        if not resume:
            for entry in staging.iterdir():
                files.remove(entry)
        try:
            yield staging
        except BaseException:
            if not (staging / STATE).is_file() and not (staging / FINISHED).is_file():
                files.remove(staging)
                if created and not any(run_dir.iterdir()):
                    run_dir.rmdir()
            raise
    finally:
        os.close(fd)


def finish(run_dir: Path) -> None:
    """Mark the staged run finished and move it into place (the three results are in resume/)."""
    staging = run_dir / STAGING
    inodes = {name: (staging / name).stat().st_ino for name in PRODUCTS
              if (staging / name).is_dir()}
    write_bytes_atomic(staging / FINISHED, json.dumps(inodes).encode())
    _move_into_place(run_dir)
