"""`golf train`: train a GPT on the train split, under a step cap and a wall-clock cap.

Batches are `batch_tokens / seq_len` rows of `seq_len + 1` tokens from the train shards, read as
`train.sampler` says: `random` windows drawn uniformly with replacement (a seeded generator; shards
weighted by length), or `sequential`, the shards in order as one stream that wraps, each token once
per epoch (stages/data/stream.py, the baseline's TokenStream). With `grad_accum_steps` > 1 the
batch is drawn once and split into equal micro-batches, so accumulation changes the arithmetic, not
the data. `train.doc_attention` keeps attention within documents while training (the model's
switch; evaluation and periodic validation attend causally as before).

The run ends at `max_steps` or `max_wallclock_seconds`, whichever comes first; the LR schedule follows
`train.schedule` (optim.schedule_progress), so a wall-clock-capped run still gets its
warmdown. An fp32 EMA of every weight is updated after each step and returned as its own checkpoint.

Options of the record stacks, all off by default:
- late QAT: `model.set_qat(qat_bits, qat_clip_sigmas)` once the LR scale falls below `qat_lr_scale`;
- depth recurrence: models with `num_loops > 0` train unlooped until `loop_enable_at` of progress,
  then `model.set_looping(True)` (the final and EMA checkpoints are the looped model's weights);
- periodic validation: a `validate(model) -> dict` callback every `val_every` steps. train() never
  sees validation tokens; the callback runs in eval mode under inference_mode, its time is not
  counted as training time, and torch's RNG is restored after it, so weights are unchanged by it;
- resume: every `checkpoint_every` steps the full state goes to `resume_dir` (resume.py), and
  `resume=True` continues from it. A finished run deletes that state.

Under torchrun (`golf train --nproc N`, distributed.py) every rank draws the same global batch
and keeps its own slice, gradients are averaged in one all-reduce before clipping, and only rank 0
reports, validates and writes. `train.compile` compiles the loss (distributed.loss_function).
run.py wraps this loop for `golf train`: data directory in, run directory out.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from stages.artifacts import Artifact
from stages.data.shards import TrainTokens, WindowSampler
from stages.data.stream import SequentialSampler
from stages.device import native_bf16
from stages.errors import GolfError
from stages.model.config import ModelConfig
from stages.model.gpt import build_model
from stages.params import to_dict
from stages.train import distributed
from stages.train.optim import (
    build_optimizers,
    lr_scale,
    muon_momentum,
    round_grad_to_bf16,
    round_to_bf16_storage,
    schedule_progress,
)
from stages.train.params import TrainParams

Validate = Callable[[nn.Module], dict]


@dataclass(frozen=True)
class StepInfo:
    step: int
    max_steps: int
    loss: float
    tokens_per_s: float
    lr_scale: float
    elapsed_s: float
    progress: float
    validation: dict | None = None  # the validation metrics, on steps where validation ran


@dataclass
class TrainResult:
    final: Artifact
    ema: Artifact
    metrics: dict


@dataclass
class RunState:
    """The counters and switches of a run: what `step`-by-step bookkeeping and resume carry."""

    step: int = 0
    tokens_seen: int = 0
    elapsed_before: float = 0.0  # training seconds of earlier (interrupted) processes
    recent: list[float] = field(default_factory=list)  # losses of the last log_every steps
    qat_step: int | None = None  # step at which late QAT turned on
    loop_step: int | None = None  # step at which looped layers turned on
    validations: list[dict] = field(default_factory=list)


class TrainClock:
    """Training time: wall-clock since start, plus earlier processes' time, minus pauses."""

    def __init__(self, elapsed_before: float = 0.0):
        self.start = time.perf_counter() - elapsed_before

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @contextlib.contextmanager
    def paused(self):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.start += time.perf_counter() - t0


def uses_bf16(setting: str, device: torch.device) -> bool:
    """train.autocast: 'auto' is bf16 where bf16 matmuls are native (CUDA, and CPUs with
    AVX512-BF16 or AMX, where they are ~2x fp32), fp32 elsewhere."""
    return setting == "bf16" or (setting == "auto" and native_bf16(device))


def autocast_context(setting: str, device: torch.device):
    if not uses_bf16(setting, device):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def apply_schedule(optimizers: list[torch.optim.Optimizer], scale: float, step: int,
                   params: TrainParams) -> None:
    """Set every group's LR to its peak times `scale`, and Muon's momentum to its warm-up value."""
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * scale
            if "momentum" in group:
                group["momentum"] = muon_momentum(step, params)


def accumulate_gradients(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                         x: torch.Tensor, y: torch.Tensor, params: TrainParams,
                         device: torch.device) -> float:
    """Backward over the batch in `grad_accum_steps` equal micro-batches; return the batch loss."""
    k = params.grad_accum_steps
    total = 0.0
    for xm, ym in zip(x.chunk(k), y.chunk(k), strict=True):
        xm, ym = xm.to(device, non_blocking=True), ym.to(device, non_blocking=True)
        with autocast_context(params.autocast, device):
            loss = loss_fn(xm, ym) / k
        loss.backward()
        total += loss.item()
    return total


@torch.no_grad()
def update_ema(ema: list[torch.Tensor], model: nn.Module, decay: float) -> None:
    weights = [p.detach().float() for p in model.parameters()]
    torch._foreach_mul_(ema, decay)
    torch._foreach_add_(ema, weights, alpha=1.0 - decay)


def maybe_enable_qat(model: nn.Module, run: RunState, scale: float, params: TrainParams) -> None:
    """Turn late QAT on (once) when the LR scale first falls below `qat_lr_scale`."""
    if params.qat_bits and run.qat_step is None and scale < params.qat_lr_scale:
        model.set_qat(params.qat_bits, params.qat_clip_sigmas)
        run.qat_step = run.step


def maybe_enable_looping(model: nn.Module, run: RunState, progress: float, params: TrainParams,
                         looped: bool) -> None:
    """Turn the looped layers on (once) when progress reaches `loop_enable_at`."""
    if looped and params.loop_enable_at > 0 and run.loop_step is None \
            and progress >= params.loop_enable_at:
        model.set_looping(True)
        run.loop_step = run.step


def run_validation(model: nn.Module, validate: Validate) -> dict:
    """Call `validate` in eval mode without gradients, leaving training exactly as it was."""
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    model.eval()
    try:
        with torch.inference_mode():
            return dict(validate(model))
    finally:
        model.train()
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


@dataclass
class Hooks:
    """What the caller wants to hear about, on rank 0 only (see `train`)."""

    on_step: Callable[[StepInfo], None] | None = None
    on_snapshot: Callable[[int, Artifact], None] | None = None
    validate: Validate | None = None


@dataclass
class Session:
    """The live objects of one training run."""

    model: nn.Module
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    optimizers: list[torch.optim.Optimizer]
    ema: list[torch.Tensor]
    sampler: WindowSampler | SequentialSampler
    ctx: distributed.DistContext
    device: torch.device


def make_sampler(data: TrainTokens, params: TrainParams) -> WindowSampler | SequentialSampler:
    """The batch source `train.sampler` names; both have sample(n), state() and restore()."""
    if params.sampler == "sequential":
        return SequentialSampler(data, params.seq_len)
    return WindowSampler(data, params.seq_len, params.seed)


def start_session(data: TrainTokens, model_config: ModelConfig, params: TrainParams) -> Session:
    """Seed, join the process group (if any), and build model, loss, optimizers, EMA and sampler."""
    torch.manual_seed(params.seed)
    ctx, device = distributed.setup(params)  # dist: this rank and its device
    model = build_model(model_config, device=device)
    ctx.broadcast_parameters(model)  # dist
    if params.embed_bf16:  # the table starts as the bf16 cast of its init, as in the scripts
        round_to_bf16_storage(model.tok_emb.weight, [])
    model.train()
    loss_fn = distributed.loss_function(model, params.compile, device)  # train.compile
    optimizers = build_optimizers(model, params)
    ema = [p.detach().float().clone() for p in model.parameters()]
    sampler = make_sampler(data, params)
    if params.doc_attention:
        model.set_document_attention(True)  # a switch, not a weight: eval models never have it
    return Session(model, loss_fn, optimizers, ema, sampler, ctx, device)


def optimizer_step(s: Session, run: RunState, params: TrainParams,
                   elapsed: float) -> tuple[float, float, float]:
    """One step at `elapsed` training seconds; returns (loss, LR scale, schedule progress)."""
    progress = schedule_progress(run.step, elapsed, params)
    scale = lr_scale(progress, params)
    maybe_enable_looping(s.model, run, progress, params, s.model.config.num_loops > 0)
    maybe_enable_qat(s.model, run, scale, params)
    apply_schedule(s.optimizers, scale, run.step, params)
    for opt in s.optimizers:
        opt.zero_grad(set_to_none=True)
    seqs = params.batch_tokens // params.seq_len
    x, y = (s.ctx.local_part(t) for t in s.sampler.sample(seqs))  # dist: this rank's slice
    step_loss = accumulate_gradients(s.loss_fn, x, y, params, s.device)
    step_loss = s.ctx.average_gradients(s.model.parameters(), step_loss)  # dist
    if not math.isfinite(step_loss):
        raise GolfError(f"training diverged at step {run.step} (loss {step_loss}); lower the LRs")
    table = s.model.tok_emb.weight if params.embed_bf16 else None  # train.embed_bf16
    if table is not None:
        round_grad_to_bf16(table)
    if params.grad_clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(s.model.parameters(), params.grad_clip_norm)
    for opt in s.optimizers:
        opt.step()
    if table is not None:
        round_to_bf16_storage(table, s.optimizers)
    update_ema(s.ema, s.model, params.ema_decay)
    run.step += 1
    run.tokens_seen += params.batch_tokens
    run.recent = (run.recent + [step_loss])[-params.log_every:]
    return step_loss, scale, progress


def train(data: TrainTokens, model_config: ModelConfig, params: TrainParams, *,
          parents: dict[str, str], provenance: dict, hooks: Hooks | None = None,
          resume_dir: str | Path | None = None, resume: bool = False) -> TrainResult:
    """Train a model from scratch (or from resume state) and return final and EMA checkpoints.

    Args:
        data: train tokens (validation tokens are a different type and cannot be passed).
        model_config: the `model` section, its vocab size filled in (ModelConfig.with_vocab).
        params: the `train` section.
        parents: hashes of the inputs, recorded in both checkpoints.
        provenance: what else the checkpoints should record (tokenizer hash, shard hashes...).
        hooks: `on_step` after every optimizer step (progress bars, logs); `on_snapshot` with
            (step, checkpoint) for each SWA snapshot (train.swa_every), so snapshots go to disk as
            they are taken; `validate` scores the model on held-out data every `train.val_every`
            steps (the caller owns the validation tokens). Called on rank 0 only.
        resume_dir: where resume state is written every `train.checkpoint_every` steps.
        resume: continue from the state in `resume_dir` (same params and data, else ResumeError).
    """
    if not isinstance(data, TrainTokens):
        raise TypeError("train() takes TrainTokens only; validation tokens are never trained on")
    if (params.checkpoint_every or resume) and resume_dir is None:
        raise GolfError("train.checkpoint_every and resume need a resume directory")
    s = start_session(data, model_config, params)
    hooks = hooks if hooks is not None and s.ctx.is_main else Hooks()  # dist: rank 0 reports
    resolved = {"model": model_config.to_metadata(), "train": to_dict(params)}
    fingerprint = None
    if params.checkpoint_every or resume:  # only runs that checkpoint load the resume module
        from stages.train import resume as resume_state
        fingerprint = resume_state.fingerprint(resolved, data.shard_hashes)
    looped = model_config.num_loops > 0
    run = RunState()
    if resume:
        saved = resume_state.load_state(resume_dir, fingerprint)
        progress = resume_state.restore(saved, s.model, s.optimizers, s.ema, s.sampler)
        if not isinstance(progress, dict) or set(progress) - set(vars(RunState())):
            raise resume_state.ResumeError("the resume state's counters are not golf's")
        run = RunState(**progress)
        # Switches live on the model, not in its state dict: set them as they were at the save.
        if run.qat_step is not None:
            s.model.set_qat(params.qat_bits, params.qat_clip_sigmas)
        if looped and params.loop_enable_at > 0 and run.loop_step is not None:
            s.model.set_looping(True)
    elif looped and params.loop_enable_at > 0:
        s.model.set_looping(False)

    def artifact(tensors: dict, role: str) -> Artifact:
        return Artifact("checkpoint", tensors, model_config, params=resolved, parents=parents,
                        provenance={**provenance, "weights": role, "train_steps": run.step})

    clock = TrainClock(run.elapsed_before)
    while True:
        elapsed = clock.elapsed()
        if params.max_wallclock_seconds > 0:
            elapsed = s.ctx.agreed_max(elapsed, s.device)  # dist: one clock for all ranks
        if run.step >= params.max_steps or (
                params.max_wallclock_seconds > 0 and elapsed >= params.max_wallclock_seconds):
            break
        step_loss, scale, progress = optimizer_step(s, run, params, elapsed)
        if (params.swa_every and hooks.on_snapshot is not None and scale < params.swa_lr_scale
                and run.step % params.swa_every == 0):
            snapshot = {n: p.detach().float().cpu().clone() for n, p in s.model.named_parameters()}
            hooks.on_snapshot(run.step, artifact(snapshot, f"swa:{run.step}"))
        validation = None
        if hooks.validate is not None and params.val_every and run.step % params.val_every == 0:
            with clock.paused():
                validation = {"step": run.step, **run_validation(s.model, hooks.validate)}
            run.validations.append(validation)
        if params.checkpoint_every and run.step % params.checkpoint_every == 0 \
                and run.step < params.max_steps and s.ctx.is_main:  # dist: one writer
            with clock.paused():
                counters = {**vars(run), "elapsed_before": clock.elapsed(),
                            "recent": list(run.recent), "validations": list(run.validations)}
                resume_state.save_state(resume_dir, resume_state.capture(
                    s.model, s.optimizers, s.ema, s.sampler, counters), fingerprint)
        if hooks.on_step is not None:
            elapsed = clock.elapsed()
            hooks.on_step(StepInfo(run.step, params.max_steps, step_loss,
                                   run.tokens_seen / max(elapsed, 1e-9), scale, elapsed, progress,
                                   validation))
    return finish(s, run, params, clock, artifact)


def finish(s: Session, run: RunState, params: TrainParams, clock: TrainClock,
           artifact: Callable[[dict, str], Artifact]) -> TrainResult:
    """The final and EMA checkpoints and the metrics of a run that has stopped."""
    if run.step == 0:  # never an untrained model presented as a result
        raise GolfError(f"train.max_wallclock_seconds={params.max_wallclock_seconds:g} ended the "
                        f"run before its first step: nothing was trained; raise it (0 = no cap)")
    elapsed = clock.elapsed()
    names = [n for n, _ in s.model.named_parameters()]
    final_state = {n: p.detach().float().cpu() for n, p in s.model.named_parameters()}
    ema_state = {n: t.cpu() for n, t in zip(names, s.ema, strict=True)}
    return TrainResult(artifact(final_state, "final"),
                       artifact(ema_state, f"ema:{params.ema_decay}"),
                       run_metrics(run, s.model, params, s.device, elapsed))


def run_metrics(run: RunState, model: nn.Module, params: TrainParams, device: torch.device,
                elapsed: float) -> dict:
    """train_metrics.json: counters, throughput, final loss, and when each late switch turned on."""
    metrics = {
        "steps": run.step,
        "tokens_seen": run.tokens_seen,
        "train_seconds": round(elapsed, 3),
        "tokens_per_s": round(run.tokens_seen / max(elapsed, 1e-9), 1),
        "final_train_loss": round(sum(run.recent) / max(len(run.recent), 1), 5),
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": device.type,
        "autocast": "bf16" if uses_bf16(params.autocast, device) else "off",
        "newton_schulz_dtype": "bf16" if native_bf16(device) else "fp32",
        "stopped_by": "max_steps" if run.step >= params.max_steps else "max_wallclock_seconds",
    }
    if params.qat_bits:
        metrics["qat_enabled_step"] = run.qat_step
    if params.loop_enable_at > 0:
        metrics["looping_enabled_step"] = run.loop_step
    if run.validations:
        metrics["validation"] = run.validations
    return metrics
