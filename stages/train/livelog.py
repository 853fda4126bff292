"""Training curves as dvclive files, for `dvc plots show` (RUN_DIR/live/plots/metrics/*.tsv).

Logged every `train.log_every` steps: train/loss (the mean over those steps), train/lr_scale,
train/tokens_per_s; and val/loss, val/bpb whenever periodic validation runs. dvclive is used only as
a file writer: it makes no DVC experiment, writes no dvc.yaml and no report, and never touches git.
Rows carry no timestamps, so a rerun with the same seed rewrites the loss curve identically.

A resumed run (`resume=True`) appends to the curves of the interrupted one, after dropping the rows
that run logged past its last saved state (from the first step the resumed run logs on), so a kill
and a resume leave each step once. A write that fails names the curves' folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from stages.files import naming, write_bytes_atomic


def drop_rows_from(live_dir: Path, step: int) -> None:
    """Delete the rows of every curve logged at `step` or later."""
    for tsv in sorted((live_dir / "plots" / "metrics").rglob("*.tsv")):
        lines = tsv.read_text(encoding="utf-8").splitlines(keepends=True)
        keep = lines[:1] + [line for line in lines[1:] if int(line.split("\t")[0]) < step]
        if len(keep) < len(lines):
            write_bytes_atomic(tsv, "".join(keep).encode())


class LiveLog:
    """A dvclive writer for one training run; `resume` appends to the curves of an earlier run."""

    def __init__(self, live_dir: str | os.PathLike, resume: bool = False):
        from dvclive import Live  # imports DVC: only when a run actually logs

        self.dir = Path(live_dir)
        with naming(self.dir):
            self.live = Live(str(live_dir), resume=resume, report=None, save_dvc_exp=False,
                             dvcyaml=None, monitor_system=False)
        self.resumed = resume  # until the first step is logged: drop the rows from it on
        self.window: list[float] = []
        self.last: tuple[int, float, float] | None = None  # (step, lr_scale, tokens_per_s)

    def log_step(self, step: int, loss: float, lr_scale: float, tokens_per_s: float,
                 every: int) -> None:
        """Record one step's loss; write a row of each curve every `every` steps."""
        if self.resumed:
            drop_rows_from(self.dir, step)
            self.resumed = False
        self.window.append(loss)
        self.last = (step, lr_scale, tokens_per_s)
        if step % every == 0:
            self._write_row()

    def _write_row(self) -> None:
        step, lr_scale, tokens_per_s = self.last
        self.live.step = step
        with naming(self.dir):
            self.live.log_metric("train/loss", round(sum(self.window) / len(self.window), 6))
            self.live.log_metric("train/lr_scale", round(lr_scale, 6))
            self.live.log_metric("train/tokens_per_s", round(tokens_per_s, 1))
        self.window = []

    def log_validation(self, metrics: dict) -> None:
        self.live.step = metrics["step"]
        with naming(self.dir):
            self.live.log_metric("val/loss", metrics["val_loss"])
            self.live.log_metric("val/bpb", metrics["val_bpb"])

    def close(self) -> None:
        """Write the steps since the last row, then the summary (the last value of each curve)."""
        if self.window:
            self._write_row()
        with naming(self.dir):
            self.live.make_summary()
