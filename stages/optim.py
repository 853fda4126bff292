"""Optimizers of the baseline (spec §3.2-3.3): Muon for block matrices, Adam for the rest.

Muon: Nesterov momentum, then the update is orthogonalised by a quintic Newton-Schulz iteration
(coefficients (3.4445, -4.7750, 2.0315), 5 steps, in bf16) and scaled by sqrt(max(1, rows/cols)).
"""

from __future__ import annotations

import torch
from torch import nn

from stages.config import TrainParams
from stages.model import CONTROL_NAMES

NS_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz(g: torch.Tensor, steps: int, eps: float = 1e-7) -> torch.Tensor:
    """Approximately orthogonalise a 2-D matrix (the nearest semi-orthogonal matrix, roughly)."""
    a, b, c = NS_COEFFS
    x = g.bfloat16()
    transposed = x.size(0) > x.size(1)
    if transposed:
        x = x.T
    x = x / (x.norm() + eps)
    for _ in range(steps):
        A = x @ x.T
        x = a * x + (b * A + c * A @ A) @ x
    return (x.T if transposed else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    def __init__(self, params, lr: float, momentum: float, backend_steps: int, nesterov: bool = True):
        super().__init__(params, dict(lr=lr, momentum=momentum, backend_steps=backend_steps,
                                      nesterov=nesterov))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(g)
                buf = state["momentum_buffer"]
                buf.mul_(group["momentum"]).add_(g)
                g = g.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
                update = newton_schulz(g, group["backend_steps"])
                update *= max(1.0, p.size(0) / p.size(1)) ** 0.5
                p.add_(update, alpha=-group["lr"])


def split_parameters(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Route parameters: 'matrix' (Muon), 'embed' (Adam, embed_lr), 'scalar' (Adam, scalar_lr)."""
    groups: dict[str, list[nn.Parameter]] = {"matrix": [], "embed": [], "scalar": []}
    for name, p in model.named_parameters():
        if name == "tok_emb.weight":
            groups["embed"].append(p)
        elif p.ndim < 2 or any(c in name for c in CONTROL_NAMES):
            groups["scalar"].append(p)
        else:
            groups["matrix"].append(p)
    return groups


def build_optimizers(model: nn.Module, params: TrainParams) -> list[torch.optim.Optimizer]:
    """The optimizers of `model`; each param group keeps its peak LR in 'base_lr' for scheduling."""
    groups = split_parameters(model)
    adam = torch.optim.Adam(
        [{"params": groups["embed"], "lr": params.embed_lr, "base_lr": params.embed_lr},
         {"params": groups["scalar"], "lr": params.scalar_lr, "base_lr": params.scalar_lr}],
        betas=(params.adam_beta1, params.adam_beta2), eps=params.adam_eps)
    muon = Muon(groups["matrix"], lr=params.matrix_lr, momentum=params.muon_momentum,
                backend_steps=params.muon_backend_steps)
    for g in muon.param_groups:
        g["base_lr"] = params.matrix_lr
    return [adam, muon]


def lr_scale(progress: float, params: TrainParams) -> float:
    """Flat at 1, then linear warmdown over the last `warmdown_frac` of progress, floored."""
    w = params.warmdown_frac
    if w <= 0 or progress < 1.0 - w:
        return 1.0
    return max((1.0 - progress) / w, params.min_lr_frac)


def muon_momentum(step: int, params: TrainParams) -> float:
    """Linear warm-up of Muon's momentum from `muon_momentum_warmup_start` over the first steps."""
    if params.muon_momentum_warmup_steps <= 0:
        return params.muon_momentum
    frac = min(step / params.muon_momentum_warmup_steps, 1.0)
    return (1 - frac) * params.muon_momentum_warmup_start + frac * params.muon_momentum
