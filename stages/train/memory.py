"""How much memory a training run needs, estimated before anything is allocated.

An absurd `train.batch_tokens` or model size is a one-line error that states the estimate, not a
kernel OOM kill or an allocator traceback minutes later. The estimate is a floor (the real run needs
more), so a run that fits is never refused:

- per parameter, 20 bytes: fp32 weights, gradients, the EMA and up to two optimizer moments;
- per token of the global batch, 24 bytes: every process draws the whole batch as int64 rows, then
  cuts inputs and targets from them;
- per token of one process's micro-batch: what the backward pass keeps, about
  (8 + 2 x mlp_mult) x model_dim values per (virtual) layer, 2 bytes each under bf16 autocast and
  4 otherwise, and the fp32 logits with their softmax and gradient (3 x vocab x 4 bytes).

It is held to the memory free on the device: MemAvailable on a CPU, the free CUDA memory on a GPU.
"""

from __future__ import annotations

import os

import torch

from stages.device import native_bf16, resolve_device
from stages.errors import GolfError
from stages.model.config import ModelConfig
from stages.model.gpt import parameter_shapes
from stages.train.params import TrainParams

GB = 1e9


def estimate(cfg: ModelConfig, params: TrainParams, world_size: int, bf16: bool) -> dict[str, int]:
    """Bytes of each part (see the module docstring) and their total, on one process."""
    n_params = sum(int(torch.Size(s).numel()) for s in parameter_shapes(cfg).values())
    layers = cfg.num_layers + cfg.num_loops * (cfg.loop_end - cfg.loop_start + 1)
    micro = params.batch_tokens // max(world_size, 1) // params.grad_accum_steps
    per_token = layers * (8 + 2 * cfg.mlp_mult) * cfg.model_dim * (2 if bf16 else 4) \
        + 3 * cfg.vocab_size * 4
    parts = {"parameters": n_params, "state": 20 * n_params, "batch": 24 * params.batch_tokens,
             "activations": micro * per_token}
    parts["total"] = parts["state"] + parts["batch"] + parts["activations"]
    return parts


def available_bytes(device: torch.device) -> int | None:
    """Free memory on `device`, or None when it cannot be told."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(cfg: ModelConfig, params: TrainParams) -> None:
    """Refuse a run whose floor estimate exceeds the free memory, naming what to lower."""
    device = resolve_device(params.device)
    bf16 = params.autocast == "bf16" or (params.autocast == "auto" and native_bf16(device))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    need = estimate(cfg, params, world, bf16)
    free = available_bytes(device)
    if free is None or need["total"] <= free:
        return
    raise GolfError(
        f"training needs at least {need['total'] / GB:,.1f} GB but {device.type} has "
        f"{free / GB:,.1f} GB free: {need['parameters']:,} parameters "
        f"({need['state'] / GB:,.1f} GB with gradients, EMA and optimizer state), a batch of "
        f"{params.batch_tokens:,} tokens ({need['batch'] / GB:,.1f} GB) and its activations "
        f"({need['activations'] / GB:,.1f} GB); lower train.batch_tokens (or raise "
        f"train.grad_accum_steps) or the model's size")
