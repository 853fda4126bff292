"""Optimizers and LR schedules of the record stacks.

Parameters are routed by their role (stages/model/roles.py): matrices to Muon, lookup tables (the
embedding first) to AdamW at `embed_lr`, controls (scales, gates, mixes) to AdamW at `scalar_lr`:

- Muon: Nesterov momentum; optionally MuonEq-R (each row of the update divided by its L2 norm,
  `train.muon_row_normalize`); orthogonalisation by a quintic Newton-Schulz iteration (in bf16 as
  the records run it, where bf16 is native; in fp32 on CPUs that only emulate bf16) with
  either the classic coefficients (3.4445, -4.7750, 2.0315) or the five per-iteration Polar-Express
  tuples (`train.muon_ns`); scaling by sqrt(max(1, rows/cols)); decoupled weight decay
  `W <- W * (1 - lr_t * train.muon_wd)` before the update.
- AdamW (torch's) with decoupled weight decay per group (`train.embed_wd`, `train.scalar_wd`); with
  both at 0 it is exactly the baseline's Adam.
- Schedule: a notion of progress in [0, 1) (`train.schedule`: steps, wall-clock, or the larger of
  the two), a flat LR then a linear warmdown over the last `warmdown_frac`, floored at `min_lr_frac`,
  and a linear warm-up of Muon's momentum.
"""

from __future__ import annotations

import torch
from torch import nn

from stages.device import native_bf16
from stages.model.roles import role_map
from stages.train.params import TrainParams

NS_COEFFS = (3.4445, -4.7750, 2.0315)
# Polar Express (PR #1344 lineage): one (a, b, c) per iteration; later iterations reuse the last.
POLAR_EXPRESS_COEFFS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)


def ns_coefficients(variant: str, steps: int) -> list[tuple[float, float, float]]:
    """The (a, b, c) of each of `steps` Newton-Schulz iterations for `variant`."""
    if variant == "classic":
        return [NS_COEFFS] * steps
    if variant == "polar_express":
        table = POLAR_EXPRESS_COEFFS
        return [table[min(i, len(table) - 1)] for i in range(steps)]
    raise ValueError(f"unknown Newton-Schulz variant {variant!r}")


NS_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def newton_schulz(g: torch.Tensor, steps: int, eps: float = 1e-7, variant: str = "classic",
                  dtype: str = "bf16") -> torch.Tensor:
    """Approximately orthogonalise a 2-D matrix (the nearest semi-orthogonal matrix, roughly)."""
    x = g.to(NS_DTYPES[dtype])
    transposed = x.size(0) > x.size(1)
    if transposed:
        x = x.T
    x = x / (x.norm() + eps)
    for a, b, c in ns_coefficients(variant, steps):
        A = x @ x.T
        x = a * x + (b * A + c * A @ A) @ x
    return (x.T if transposed else x).to(g.dtype)


def row_normalize(u: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """MuonEq-R: each row divided by its L2 norm (at least `eps`), so no row dominates NS."""
    return u / u.norm(dim=1, keepdim=True).clamp_min(eps)


class Muon(torch.optim.Optimizer):
    """Muon for 2-D matrices; see the module docstring for the update."""

    def __init__(self, params, lr: float, momentum: float, backend_steps: int, nesterov: bool = True,
                 ns: str = "classic", row_normalize: bool = False, weight_decay: float = 0.0,
                 ns_dtype: str = "bf16"):
        super().__init__(params, dict(lr=lr, momentum=momentum, backend_steps=backend_steps,
                                      nesterov=nesterov, ns=ns, row_normalize=row_normalize,
                                      weight_decay=weight_decay, ns_dtype=ns_dtype))

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
                if group["row_normalize"]:
                    g = row_normalize(g)
                update = newton_schulz(g, group["backend_steps"], variant=group["ns"],
                                       dtype=group.get("ns_dtype", "bf16"))
                update *= max(1.0, p.size(0) / p.size(1)) ** 0.5
                if group["weight_decay"] > 0:  # skipped at 0 so the baseline stays bit-identical
                    p.mul_(1.0 - group["lr"] * group["weight_decay"])
                p.add_(update, alpha=-group["lr"])


# Optimizer group of each role kind: Muon for matrices, AdamW at two LRs for the rest.
GROUP_OF_KIND = {"matrix": "matrix", "table": "embed", "control": "scalar"}


def split_parameters(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Route parameters by role: 'matrix' (Muon), 'embed' (AdamW, embed_lr), 'scalar' (AdamW,
    scalar_lr), each list in the model's parameter order."""
    roles = role_map(model)
    groups: dict[str, list[nn.Parameter]] = {"matrix": [], "embed": [], "scalar": []}
    for name, p in model.named_parameters():
        groups[GROUP_OF_KIND[roles[name].kind]].append(p)
    return groups


def build_optimizers(model: nn.Module, params: TrainParams) -> list[torch.optim.Optimizer]:
    """The optimizers of `model`; each param group keeps its peak LR in 'base_lr' for scheduling."""
    groups = split_parameters(model)
    adam = torch.optim.AdamW(
        [{"params": groups["embed"], "lr": params.embed_lr, "base_lr": params.embed_lr,
          "weight_decay": params.embed_wd},
         {"params": groups["scalar"], "lr": params.scalar_lr, "base_lr": params.scalar_lr,
          "weight_decay": params.scalar_wd}],
        betas=(params.adam_beta1, params.adam_beta2), eps=params.adam_eps)
    device = next(model.parameters()).device
    muon = Muon(groups["matrix"], lr=params.matrix_lr, momentum=params.muon_momentum,
                backend_steps=params.muon_backend_steps, ns=params.muon_ns,
                row_normalize=params.muon_row_normalize, weight_decay=params.muon_wd,
                ns_dtype="bf16" if native_bf16(device) else "fp32")
    for g in muon.param_groups:
        g["base_lr"] = params.matrix_lr
    return [adam, muon]


@torch.no_grad()
def round_grad_to_bf16(p: nn.Parameter) -> None:
    """The gradient a bf16 parameter gets: rounded to bf16 (see `round_to_bf16_storage`)."""
    if p.grad is not None:
        p.grad.copy_(p.grad.bfloat16())


@torch.no_grad()
def round_to_bf16_storage(p: nn.Parameter, optimizers: list[torch.optim.Optimizer]) -> None:
    """Keep `p` as if it were stored in bf16 (train.embed_bf16): the value and its Adam moments
    rounded to bf16 after each step. The baseline's and the records' scripts cast the whole model
    to bf16 and restore only the linear layers and the small tensors to fp32, so their embedding
    table lives in bf16 (a fused Adam reads bf16, computes in fp32 and writes bf16: the same numbers
    as this fp32 step from bf16 values, then rounded). Small late updates are lost to rounding."""
    p.copy_(p.bfloat16())
    for opt in optimizers:
        for key in ("exp_avg", "exp_avg_sq"):
            moment = opt.state.get(p, {}).get(key)
            if moment is not None:
                moment.copy_(moment.bfloat16())


def schedule_progress(step: int, elapsed_s: float, params: TrainParams) -> float:
    """How far through the run the LR schedule is, by `train.schedule`.

    'steps' is step / max_steps (deterministic: a resumed run follows the same LRs); 'wallclock' is
    elapsed / max_wallclock_seconds (the records' fraction of the time budget); 'auto' the larger of
    the two, so a run capped by either still gets its warmdown.
    """
    by_steps = step / params.max_steps
    by_time = elapsed_s / params.max_wallclock_seconds if params.max_wallclock_seconds > 0 else 0.0
    if params.schedule == "steps":
        return by_steps
    if params.schedule == "wallclock":
        return by_time
    return max(by_steps, by_time)


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
