"""`golf train`: train the baseline GPT on the train split, under a step cap and a wall-clock cap.

Batches are `batch_tokens / seq_len` windows of `seq_len + 1` tokens drawn uniformly at random (a
seeded generator; shards weighted by length) from the train shards. Random windows rather than the
baseline's sequential stream, because small corpora are seen for several epochs.

The run ends at `max_steps` or `max_wallclock_seconds`, whichever comes first; the LR schedule follows
the same notion of progress, so a wall-clock-capped run still gets its warmdown. An fp32 EMA of every
weight is updated after each step and returned as its own checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from stages import distributed
from stages.artifacts import Artifact
from stages.config import ModelConfig, TrainParams, to_dict
from stages.data import TrainTokens, WindowSampler
from stages.errors import GolfError
from stages.model import build_model
from stages.optim import build_optimizers, lr_scale, muon_momentum


@dataclass(frozen=True)
class StepInfo:
    step: int
    max_steps: int
    loss: float
    tokens_per_s: float
    lr_scale: float
    elapsed_s: float
    progress: float


@dataclass
class TrainResult:
    final: Artifact
    ema: Artifact
    metrics: dict


def autocast_context(setting: str, device: torch.device):
    """bf16 autocast: on CUDA always with 'auto'; on CPU too, where bf16 matmuls are ~2.5x fp32."""
    if setting == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def train(data: TrainTokens, model_config: ModelConfig, params: TrainParams, *,
          parents: dict[str, str], provenance: dict,
          on_step: Callable[[StepInfo], None] | None = None,
          on_snapshot: Callable[[int, Artifact], None] | None = None) -> TrainResult:
    """Train a model from scratch and return the final and EMA checkpoints plus metrics.

    Args:
        data: train tokens (validation tokens are a different type and cannot be passed).
        model_config: the `model` section (vocab size must match the data's tokenizer).
        params: the `train` section.
        parents: hashes of the inputs, recorded in both checkpoints.
        provenance: what else the checkpoints should record (tokenizer hash, shard hashes...).
        on_step: called after every optimizer step (for progress bars and logs).
        on_snapshot: called with (step, checkpoint) for each SWA snapshot (train.swa_every), so
            snapshots go to disk as they are taken instead of piling up in memory.
    """
    if not isinstance(data, TrainTokens):
        raise TypeError("train() takes TrainTokens only; validation tokens are never trained on")
    torch.manual_seed(params.seed)
    ctx, device = distributed.setup(params)  # dist: this rank and its device
    if not ctx.is_main:  # dist: only rank 0 reports and writes snapshots
        on_step = on_snapshot = None
    model = build_model(model_config, device=device)
    ctx.broadcast_parameters(model)  # dist
    model.train()
    loss_fn = distributed.loss_function(model, params.compile, device)  # train.compile
    optimizers = build_optimizers(model, params)
    ema = [p.detach().float().clone() for p in model.parameters()]
    sampler = WindowSampler(data, params.seq_len, params.seed)
    seqs = params.batch_tokens // params.seq_len
    micro = seqs // params.grad_accum_steps

    resolved = {"model": to_dict(model_config), "train": to_dict(params)}

    def artifact(tensors: dict, role: str) -> Artifact:
        return Artifact("checkpoint", tensors, model_config, params=resolved, parents=parents,
                        provenance={**provenance, "weights": role, "train_steps": step})

    step, tokens_seen, recent = 0, 0, []
    start = time.perf_counter()
    while True:
        elapsed = time.perf_counter() - start
        progress = step / params.max_steps
        if params.max_wallclock_seconds > 0:
            progress = max(progress, elapsed / params.max_wallclock_seconds)
            progress = ctx.agreed_progress(progress, device)  # dist: one clock for all ranks
        if progress >= 1.0:
            break
        scale = lr_scale(progress, params)
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * scale
                if "momentum" in group:
                    group["momentum"] = muon_momentum(step, params)

        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        step_loss = 0.0
        for _ in range(params.grad_accum_steps):
            x, y = (ctx.local_part(t) for t in sampler.sample(micro))  # dist: this rank's slice
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast_context(params.autocast, device):
                loss = loss_fn(x, y) / params.grad_accum_steps
            loss.backward()
            step_loss += loss.item()
        step_loss = ctx.average_gradients(model.parameters(), step_loss)  # dist
        if not math.isfinite(step_loss):
            raise GolfError(f"training diverged at step {step} (loss {step_loss}); lower the LRs")
        if params.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), params.grad_clip_norm)
        for opt in optimizers:
            opt.step()
        with torch.no_grad():
            weights = [p.detach().float() for p in model.parameters()]
            torch._foreach_mul_(ema, params.ema_decay)
            torch._foreach_add_(ema, weights, alpha=1.0 - params.ema_decay)

        step += 1
        tokens_seen += params.batch_tokens
        if (params.swa_every and on_snapshot is not None and scale < params.swa_lr_scale
                and step % params.swa_every == 0):
            snapshot = {n: p.detach().float().cpu().clone() for n, p in model.named_parameters()}
            on_snapshot(step, artifact(snapshot, f"swa:{step}"))
        recent = (recent + [step_loss])[-params.log_every:]
        if on_step is not None:
            elapsed = time.perf_counter() - start
            on_step(StepInfo(step, params.max_steps, step_loss, tokens_seen / max(elapsed, 1e-9),
                             scale, elapsed, progress))

    elapsed = time.perf_counter() - start
    names = [n for n, _ in model.named_parameters()]
    final_state = {n: p.detach().float().cpu() for n, p in model.named_parameters()}
    ema_state = {n: t.cpu() for n, t in zip(names, ema, strict=True)}
    metrics = {
        "steps": step,
        "tokens_seen": tokens_seen,
        "train_seconds": round(elapsed, 3),
        "tokens_per_s": round(tokens_seen / max(elapsed, 1e-9), 1),
        "final_train_loss": round(sum(recent) / max(len(recent), 1), 5),
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": device.type,
        "stopped_by": "max_steps" if step >= params.max_steps else "max_wallclock_seconds",
    }
    return TrainResult(artifact(final_state, "final"), artifact(ema_state, f"ema:{params.ema_decay}"),
                       metrics)
