"""`golf train`: a data directory -> a run directory (stages/train/run.py)."""

import math
from pathlib import Path

import click

from golfcli.options import CONTEXT, LazyBar, params_epilog, stage_options
from golfcli.params import describe_source, load_params
from stages.model.config import ModelConfig
from stages.train.params import TrainParams
from stages.train.run import TrainJob, relaunch

SECTIONS = {"train": TrainParams, "model": ModelConfig}


@click.command(name="train", context_settings=CONTEXT, epilog=params_epilog(SECTIONS))
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "run_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run directory: final.safetensors, ema.safetensors, train_metrics.json, live/, "
                   "swa/.")
@click.option("--resume", is_flag=True,
              help="Continue the interrupted run in RUN_DIR/resume/ (same params and data).")
@click.option("--nproc", type=click.IntRange(min=1), default=1,
              help="Data-parallel processes on this machine (one GPU each on CUDA); >1 relaunches "
                   "through torchrun with the same global batch.")
@stage_options
def command(data_dir, run_dir, resume, nproc, params_file, overrides):
    """Train the GPT on DATA_DIR's train shards.

    \b
    Stops at train.max_steps or train.max_wallclock_seconds, whichever comes
    first; train.schedule picks which of the two drives the LR warmdown. The
    vocabulary size comes from DATA_DIR's tokenizer. Writes to RUN_DIR:
      final.safetensors, ema.safetensors, train_metrics.json
      live/     loss, LR scale, tok/s (and val) curves for `dvc plots show`
      swa/      SWA snapshots (train.swa_every > 0) for `golf average`
      resume/   the run until it finishes: resumable state every
                train.checkpoint_every steps, its curves and snapshots so far;
                continue with --resume. The previous run's files are replaced
                only once the new run has finished.
    With train.val_every > 0 the validation split of DATA_DIR is scored every
    that many steps (logged only; it never changes the training).
    """
    p = load_params(params_file, SECTIONS, overrides)
    train_p = p["train"]
    if nproc > 1:
        args = ["train", str(data_dir), "--out", str(run_dir)]
        args += ["--params", str(params_file)] if params_file is not None else []
        args += ["--resume"] if resume else []
        args += [a for o in overrides for a in ("--set", o)]
        raise SystemExit(relaunch(nproc, train_p, args))
    job = TrainJob.prepare(data_dir, run_dir, p["model"], train_p, resume=resume)
    with LazyBar(train_p.max_steps, "train", "step") as bar:
        def on_step(info):
            if bar.bar is None:  # once a step has run: an error before it stays one line
                click.echo(f"training on {job.data.num_tokens:,} tokens from "
                           f"{len(job.data.shards)} shard(s)", err=True)
            bar.update(1)
            if train_p.max_wallclock_seconds > 0:  # the ETA follows the wall-clock cap
                projected = math.ceil(info.step * train_p.max_wallclock_seconds
                                      / max(info.elapsed_s, 1e-9))
                bar.start().total = max(info.step, min(train_p.max_steps, projected))
            if info.validation:
                bar.write(f"step {info.step}: val_loss {info.validation['val_loss']:.4f}, "
                          f"val_bpb {info.validation['val_bpb']:.4f}")
            if info.step % train_p.log_every == 0 or info.step == 1:
                bar.start().set_postfix(loss=f"{info.loss:.4f}", tok_s=f"{info.tokens_per_s:,.0f}",
                                        lr=f"{info.lr_scale:.2f}", refresh=False)
        m = job.run(on_step)
    if m is None:  # not rank 0
        return
    click.echo(f"{run_dir}: {m['steps']} steps, {m['tokens_seen']:,} tokens in "
               f"{m['train_seconds']:.1f}s ({m['tokens_per_s']:,.0f} tok/s), "
               f"final train loss {m['final_train_loss']:.4f}, stopped by {m['stopped_by']}")
    click.echo(describe_source(params_file, tuple(SECTIONS)))
