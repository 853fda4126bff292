"""`golf train` as a job: a data directory in, a run directory out.

    job = TrainJob.prepare(data_dir, run_dir, model_config, params, resume=False)
    metrics = job.run(on_step)            # None on every rank but 0 under torchrun

`prepare` fills the model's vocabulary in from the data's tokenizer, reads the train shards, and
assembles what the checkpoints record: the parent (the data manifest's hash, or the shards' when
there is no manifest) and the provenance (data folder, tokenizer hash, train shard hashes). `run`
trains (loop.py), logs the live curves (livelog.py), writes SWA snapshots as they are taken, then
the final and EMA checkpoints and train_metrics.json, and only then drops the resume state. Under
torchrun only rank 0 writes.

RUN_DIR holds:
    final.safetensors, ema.safetensors, train_metrics.json
    live/      dvclive curves for `dvc plots show`
    swa/       SWA snapshots for `golf average` (empty unless train.swa_every > 0)
    resume/    resume state while a run with train.checkpoint_every is unfinished
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm

from stages import artifacts
from stages.data.shards import TrainTokens, find_tokenizer, load_train_tokens
from stages.device import resolve_device
from stages.files import sha256_bytes, sha256_file, write_json_atomic
from stages.model.config import ModelConfig
from stages.train import distributed
from stages.train import resume as resume_state
from stages.train.livelog import LiveLog
from stages.train.loop import Hooks, StepInfo, train
from stages.train.params import TrainParams
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
        data_dir, run_dir = Path(data_dir), Path(run_dir)
        tokenizer = find_tokenizer(data_dir)
        vocab = spm.SentencePieceProcessor(model_file=str(tokenizer)).get_piece_size()
        model_config = model_config.with_vocab(vocab, str(tokenizer))
        data = load_train_tokens(data_dir)
        manifest = data_dir / "manifest.json"
        parent = sha256_file(manifest) if manifest.is_file() else \
            sha256_bytes("".join(data.shard_hashes).encode())
        provenance = {"data_dir": str(data_dir), "tokenizer_sha256": sha256_file(tokenizer),
                      "train_shards": list(data.shard_hashes)}
        return cls(data_dir, run_dir, model_config, params, data, parent, provenance, resume,
                   distributed.is_main_process())

    def _snapshot_dir(self) -> Path:
        """RUN_DIR/swa, emptied of an earlier run's snapshots (a resumed run keeps its own)."""
        swa_dir = self.run_dir / "swa"
        if self.is_main:
            if not self.resume:
                for stale in swa_dir.glob("step_*.safetensors"):
                    stale.unlink()
            swa_dir.mkdir(parents=True, exist_ok=True)
        return swa_dir

    def run(self, on_step: Callable[[StepInfo], None] | None = None) -> dict | None:
        """Train and write RUN_DIR; the metrics on rank 0, None on the other ranks."""
        p = self.params
        validate = build_validator(self.data_dir, p) if p.val_every else None
        swa_dir = self._snapshot_dir()
        live = LiveLog(self.run_dir / "live", resume=self.resume) if self.is_main else None

        def step(info: StepInfo) -> None:  # rank 0 only
            live.log_step(info.step, info.loss, info.lr_scale, info.tokens_per_s, p.log_every)
            if info.validation:
                live.log_validation(info.validation)
            if on_step is not None:
                on_step(info)

        def snapshot(step_number: int, ckpt: artifacts.Artifact) -> None:
            artifacts.save(ckpt, swa_dir / f"step_{step_number:06d}.safetensors")

        result = train(self.data, self.model_config, p, parents={"data": self.parent},
                       provenance=self.provenance,
                       hooks=Hooks(on_step=step, on_snapshot=snapshot, validate=validate),
                       resume_dir=self.run_dir / "resume", resume=self.resume)
        if not self.is_main:
            return None
        live.close()
        artifacts.save(result.final, self.run_dir / "final.safetensors")
        artifacts.save(result.ema, self.run_dir / "ema.safetensors")
        write_json_atomic(self.run_dir / "train_metrics.json", result.metrics)
        # Only now that the final checkpoints are on disk is the resume state no longer needed.
        resume_state.remove_state(self.run_dir / "resume")
        return result.metrics
