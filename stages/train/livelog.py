"""Training curves as dvclive files, for `dvc plots show` (RUN_DIR/live/plots/metrics/*.tsv).

Logged every `train.log_every` steps: train/loss (the mean over those steps), train/lr_scale,
train/tokens_per_s; and val/loss, val/bpb whenever periodic validation runs. dvclive is used only as
a file writer: it makes no DVC experiment, writes no dvc.yaml and no report, and never touches git.
Rows carry no timestamps, so a rerun with the same seed rewrites the loss curve identically.
"""

from __future__ import annotations

import os


class LiveLog:
    """A dvclive writer for one training run; `resume` appends to the curves of an earlier run."""

    def __init__(self, live_dir: str | os.PathLike, resume: bool = False):
        from dvclive import Live  # imports DVC: only when a run actually logs

        self.live = Live(str(live_dir), resume=resume, report=None, save_dvc_exp=False,
                         dvcyaml=None, monitor_system=False)
        self.window: list[float] = []
        self.last: tuple[int, float, float] | None = None  # (step, lr_scale, tokens_per_s)

    def log_step(self, step: int, loss: float, lr_scale: float, tokens_per_s: float,
                 every: int) -> None:
        """Record one step's loss; write a row of each curve every `every` steps."""
        self.window.append(loss)
        self.last = (step, lr_scale, tokens_per_s)
        if step % every == 0:
            self._write_row()

    def _write_row(self) -> None:
        step, lr_scale, tokens_per_s = self.last
        self.live.step = step
        self.live.log_metric("train/loss", round(sum(self.window) / len(self.window), 6))
        self.live.log_metric("train/lr_scale", round(lr_scale, 6))
        self.live.log_metric("train/tokens_per_s", round(tokens_per_s, 1))
        self.window = []

    def log_validation(self, metrics: dict) -> None:
        self.live.step = metrics["step"]
        self.live.log_metric("val/loss", metrics["val_loss"])
        self.live.log_metric("val/bpb", metrics["val_bpb"])

    def close(self) -> None:
        """Write the steps since the last row, then the summary (the last value of each curve)."""
        if self.window:
            self._write_row()
        self.live.make_summary()
