"""How a training run executes: one process or several under torchrun, and the compiled loss.

Data parallelism keeps the numbers of a single process. Every rank draws the same global batch from
the sampler (seeded random windows, or the next rows of the sequential stream) and keeps its own
contiguous slice of the sequences, so N processes see exactly the sequences one process would see. After the backward pass the gradients (and the step loss) are
averaged across ranks in one all-reduce of a flat buffer, and every rank applies the same optimizer
step, so the weights stay identical everywhere without DDP. Only rank 0 reports and writes.

A process is part of a multi-process run when torchrun has set WORLD_SIZE > 1 in its environment;
otherwise `setup` returns a single-process context whose hooks do nothing, so a plain run is
bit-identical to one that never heard of this module.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from stages.device import resolve_device
from stages.errors import GolfError
from stages.train.params import TrainParams


@dataclass(frozen=True)
class DistContext:
    """This process's place in the run: rank among `world_size` processes, GPU index on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 is the one that logs, shows progress and writes artifacts."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def local_part(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch of sequences (dim 0)."""
        if not self.active:
            return batch
        per_rank = batch.size(0) // self.world_size
        return batch[self.rank * per_rank:(self.rank + 1) * per_rank]

    def average_gradients(self, params: Iterable[torch.nn.Parameter], loss: float) -> float:
        """Average every gradient and the step loss across ranks; returns the global step loss.

        One all-reduce (SUM, then a division) over a flat fp32 buffer: gloo has no AVG op, and a
        single fixed-order collective keeps the result deterministic for a given world size.
        """
        if not self.active:
            return loss
        grads = [p.grad for p in params if p.grad is not None]
        device = grads[0].device if grads else torch.device("cpu")
        flat = torch.cat([g.reshape(-1).float() for g in grads] +
                         [torch.tensor([loss], dtype=torch.float32, device=device)])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()
        return float(flat[-1].item())

    def agreed_max(self, value: float, device: torch.device) -> float:
        """The largest value of any rank: with the elapsed time, all ranks stop (and schedule LRs)
        on the same step even when their wall clocks drift apart under a time cap."""
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.item())

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Start every rank from rank 0's weights (equal already with one seed; this makes sure)."""
        if not self.active:
            return
        with torch.no_grad():
            for p in module.parameters():
                dist.broadcast(p.data, src=0)


def env_context() -> DistContext:
    """The rank, world size and local rank that torchrun put in the environment (1 process if none)."""
    return DistContext(rank=int(os.environ.get("RANK", "0")),
                       world_size=int(os.environ.get("WORLD_SIZE", "1")),
                       local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def is_main_process() -> bool:
    """Whether this process should print and write (rank 0, or no torchrun at all)."""
    return env_context().is_main


def setup(params: TrainParams) -> tuple[DistContext, torch.device]:
    """Join the process group torchrun described, if any, and pick this rank's device.

    NCCL with one GPU per local rank on CUDA, gloo on CPU. Idempotent: a second call in the same
    process reuses the group.
    """
    ctx = env_context()
    device = resolve_device(params.device)
    if not ctx.active:
        return ctx, device
    check_world_size(params, ctx.world_size)
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                rank=ctx.rank, world_size=ctx.world_size)
        atexit.register(_shutdown)
    return ctx, device


def _shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def check_world_size(params: TrainParams, nproc: int) -> None:
    """Each rank needs a whole number of sequences in every micro-batch."""
    seqs = params.batch_tokens // params.seq_len
    if nproc < 1:
        raise GolfError(f"--nproc must be >= 1, got {nproc}")
    if seqs % (nproc * params.grad_accum_steps) != 0:
        raise GolfError(f"train.batch_tokens / train.seq_len ({seqs} sequences) must be divisible "
                        f"by nproc x train.grad_accum_steps ({nproc} x {params.grad_accum_steps})")


def check_devices(device: torch.device, nproc: int) -> None:
    """On CUDA each process gets its own GPU."""
    if device.type == "cuda" and nproc > torch.cuda.device_count():
        raise GolfError(f"--nproc {nproc} needs {nproc} GPUs; {torch.cuda.device_count()} visible")


def torchrun_command(nproc: int, golf_args: list[str]) -> list[str]:
    """The command that runs `python -m golfcli <golf_args>` in `nproc` processes on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc_per_node", str(nproc), "-m", "golfcli", *golf_args]


def use_compile(setting: str, device: torch.device) -> bool:
    """train.compile: 'auto' compiles on CUDA only (on CPU a cold compile costs minutes)."""
    if setting == "auto":
        return device.type == "cuda"
    return setting == "on"


def loss_function(model: torch.nn.Module, setting: str,
                  device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """`model.loss`, compiled when train.compile says so.

    The bound method is compiled rather than the module, so the module (and its state_dict names,
    which must stay canonical: no `_orig_mod.` prefix) is untouched and the optimizers, EMA and
    checkpoints keep working on it directly.
    """
    if not use_compile(setting, device):
        return model.loss
    return torch.compile(model.loss, dynamic=False)
