"""`golf train` as a job: a data directory in, a run directory out.

    job = TrainJob.prepare(data_dir, run_dir, model_config, params, resume=False)
    metrics = job.run(on_step)            # None on every rank but 0 under torchrun

`prepare` checks everything it can before any work: the run folder (rundir.py), the inputs
(inputs.py: the vocabulary from the data's tokenizer, every token id within it, the train documents
disjoint from the validation documents, the parent and provenance), that the run fits in memory
(memory.py) and, for `--resume`, that there is a state to resume from. `run` trains (loop.py) into
RUN_DIR/resume/, logging the live curves (livelog.py) and writing SWA snapshots as they are taken,
then writes the final and EMA checkpoints and train_metrics.json there and moves the finished run
into RUN_DIR (rundir.py), dropping the resume state last. Under torchrun only rank 0 writes.

RUN_DIR holds:
    final.safetensors, ema.safetensors, train_metrics.json
    train.log  the run's text log (runlog.py): hyperparameters, step lines, stop line, ledger
    live/      dvclive curves for `dvc plots show`
    swa/       SWA snapshots for `golf average` (empty unless train.swa_every > 0)
    resume/    the unfinished run: resume state (train.checkpoint_every), curves and snapshots
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stages import artifacts
from stages.data.shards import TrainTokens, find_tokenizer
from stages.device import resolve_device
from stages.files import check_outputs, write_json_atomic
from stages.model.config import ModelConfig
from stages.train import distributed, rundir
from stages.train.inputs import train_inputs
from stages.train.livelog import LiveLog
from stages.train.loop import Hooks, StepInfo, train
from stages.train.memory import check_memory
from stages.train.params import TrainParams
from stages.train.resume import ResumeError
from stages.train.runlog import RunLog, step_logger
from stages.train.validation import build_validator


def relaunch(nproc: int, params: TrainParams, golf_args: list[str]) -> int:
    """Run `golf <golf_args>` in `nproc` processes through torchrun; return its exit status.

    Checked here first, so that a bad value is one line rather than one traceback per worker.
    """
    distributed.check_world_size(params, nproc)
    distributed.check_devices(resolve_device(params.device), nproc)
    return subprocess.run(distributed.torchrun_command(nproc, golf_args)).returncode


@dataclass
class TrainJob:
    data_dir: Path
    run_dir: Path
    model_config: ModelConfig  # with the tokenizer's vocabulary filled in
    params: TrainParams
    data: TrainTokens
    parent: str
    provenance: dict
    resume: bool
    is_main: bool  # rank 0 (or no torchrun): the process that logs and writes

    @classmethod
    def prepare(cls, data_dir: str | os.PathLike, run_dir: str | os.PathLike,
                model_config: ModelConfig, params: TrainParams, resume: bool = False) -> TrainJob:
        shown, data_dir = run_dir, Path(data_dir)
        run_dir = Path(run_dir).resolve() if Path(run_dir).is_symlink() else Path(run_dir)
        check_outputs([run_dir], [data_dir])
        rundir.check_run_dir(run_dir, shown)
        state = run_dir / rundir.STAGING / rundir.STATE
        if resume and not state.is_file():
            raise ResumeError(f"{state}: no resume state (train.checkpoint_every writes it)")
        inputs = train_inputs(data_dir, find_tokenizer(data_dir), model_config)
        check_memory(inputs.model_config, params)
        return cls(data_dir, run_dir, inputs.model_config, params, inputs.data, inputs.parent,
                   inputs.provenance, resume, distributed.is_main_process())

    def run(self, on_step: Callable[[StepInfo], None] | None = None) -> dict | None:
        """Train and write RUN_DIR; the metrics on rank 0, None on the other ranks."""
        if not self.is_main:
            self._train(None, lambda info: None)
            return None
        with rundir.staging_for(self.run_dir, self.resume) as staging:
            live = LiveLog(staging / "live", resume=self.resume)
            log = RunLog(staging / "train.log", append=self.resume)
            log.header(self.data_dir, find_tokenizer(self.data_dir))
            log.hyperparameters({"model": self.model_config, "train": self.params})
            with log.phase("train_loop", "train"):
                result = self._train(staging, self._logger(live, log, on_step))
            log.stopped(result.metrics)
            live.close()
            artifacts.save(result.final, staging / "final.safetensors")
            artifacts.save(result.ema, staging / "ema.safetensors")
            write_json_atomic(staging / "train_metrics.json", result.metrics)
            rundir.finish(self.run_dir)  # moves the run into place, then drops the resume state
        return result.metrics

    def _logger(self, live: LiveLog, log: RunLog, on_step) -> Callable[[StepInfo], None]:
        log_step = step_logger(log, self.params.max_steps, self.params.log_every)

        def step(info: StepInfo) -> None:  # rank 0 only
            live.log_step(info.step, info.loss, info.lr_scale, info.tokens_per_s,
                          self.params.log_every)
            log_step(info)
            if info.validation:
                live.log_validation(info.validation)
            if on_step is not None:
                on_step(info)
        return step

    def _train(self, staging: Path | None, step: Callable[[StepInfo], None]):
        p = self.params
        validate = build_validator(self.data_dir, p, self.model_config.vocab_size) \
            if p.val_every else None
        swa_dir = staging / "swa" if staging is not None else None
        if swa_dir is not None:
            swa_dir.mkdir(exist_ok=True)

        def snapshot(step_number: int, ckpt: artifacts.Artifact) -> None:
            artifacts.save(ckpt, swa_dir / f"step_{step_number:06d}.safetensors")

        resume_dir = staging if staging is not None else self.run_dir / rundir.STAGING
        return train(self.data, self.model_config, p, parents={"data": self.parent},
                     provenance=self.provenance,
                     hooks=Hooks(on_step=step, on_snapshot=snapshot, validate=validate),
                     resume_dir=resume_dir, resume=self.resume)
