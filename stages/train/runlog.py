"""A run's text log: the lines reviewers look for, written by `golf train` (RUN_DIR/train.log) and by
a submission's train_gpt.py (logs/RUN_ID.txt, echoed to stdout).

    hyperparameters <section>: {...}
    step:<n>/<max> train_loss:<x> train_time:<ms>ms step_avg:<ms>ms tok_s:<n> lr_scale:<x>
    stopped_by: <max_steps|max_wallclock_seconds> steps: <n> train_time:<ms>ms ...
    ledger: <phase> <seconds>s [train|eval]              (stages/ledger.py)
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from stages.ledger import ledger_line, summary_lines


class RunLog:
    """Appends lines to `path` (and prints them with `echo`); a ledger of where the seconds went.
    Inactive (on ranks other than 0) it writes nothing."""

    def __init__(self, path: str | os.PathLike, active: bool = True, echo: bool = False,
                 append: bool = False):
        self.path, self.active, self.echo = Path(path), active, echo
        self.ledger: list[tuple[str, float, str]] = []
        if active:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not append or not self.path.exists():
                self.path.write_text("")

    def __call__(self, line: str) -> None:
        if not self.active:
            return
        if self.echo:
            print(line, flush=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")

    @contextmanager
    def phase(self, name: str, budget: str) -> Iterator[None]:
        """Time a phase against the train or the eval budget."""
        t0 = time.perf_counter()
        yield
        seconds = time.perf_counter() - t0
        self.ledger.append((name, seconds, budget))
        self(ledger_line(name, seconds, budget))

    def header(self, data_dir: str | os.PathLike, tokenizer: str | os.PathLike) -> None:
        """Versions, device and inputs: the first line of a run's log."""
        import torch

        from stages import __version__

        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        self(f"golf {__version__} torch {torch.__version__} device {device} "
             f"world_size {os.environ.get('WORLD_SIZE', '1')} data {data_dir} tokenizer {tokenizer}")

    def close_ledger(self) -> None:
        for line in summary_lines(self.ledger):
            self(line)

    def hyperparameters(self, sections: dict) -> None:
        for section, values in sections.items():
            self(f"hyperparameters {section}: "
                 f"{json.dumps(dataclasses.asdict(values), sort_keys=True)}")

    def stopped(self, m: dict) -> None:
        """The stop line, from train_metrics."""
        self(f"stopped_by: {m['stopped_by']} steps: {m['steps']} "
             f"train_time:{m['train_seconds'] * 1000:.0f}ms tok_s:{m['tokens_per_s']:.0f} "
             f"final_train_loss:{m['final_train_loss']:.4f}")


def step_logger(log: RunLog, max_steps: int, every: int) -> Callable:
    """An on_step hook writing a step line on step 1 and every `every` steps."""
    def on_step(info) -> None:
        if info.step == 1 or info.step % every == 0:
            log(f"step:{info.step}/{max_steps} train_loss:{info.loss:.4f} "
                f"train_time:{info.elapsed_s * 1000:.0f}ms "
                f"step_avg:{info.elapsed_s * 1000 / info.step:.2f}ms "
                f"tok_s:{info.tokens_per_s:.0f} lr_scale:{info.lr_scale:.3f}")
    return on_step
