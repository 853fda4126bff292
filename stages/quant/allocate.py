"""Row steps by loss sensitivity: a rate-distortion allocation of the quantization step.

A weight moved by e raises the loss by about F e^2 / 2, F its diagonal Fisher information (the
mean squared loss gradient). Rounding to a step D costs about D^2 / 12 of squared error per weight
and saves log2 D bits, so a row i of n weights adds n F_i D_i^2 / 24 to the loss and n log2 D_i
to the bits (F_i: the row's mean Fisher). The fewest bits for a given loss increase spend the same
loss per bit on every row (reverse water-filling at high rate):

    D_i ~ 1 / sqrt(F_i)

SDClip instead sets D_i ~ std(row i), whatever the row does to the loss. `quantize.fisher_alpha`
moves each row's step from the grid's toward this rule:

    m_i = (D_i(rule) / D_i(grid)) ** alpha, over its element-weighted geometric mean
    clip_i = grid clip_i * max(clamp(m_i, 1 / CLAMP, CLAMP), MIN_SIGMAS * std_i / grid clip_i)

so the mean step stays where the grid put it and `clip_sigmas` (or `clip_multiplier`) remains the
size knob; the rule spends fewer bytes there, so the same val_bpb comes at a wider clip.

F comes from the calibration batches (train shards or self-generated text, never validation), in
backward passes of MICRO_SEQS sequences. A pass's squared mean gradient estimates the
per-sequence Fisher over the pass's size (plus the squared mean gradient, small near a minimum):
a factor common to every row, which the normalisation removes. GPTQ then shapes each row's error
over its columns as before.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from stages.quant.registry import QuantizeError

ROW_FISHER = ".row_fisher"  # key suffix of a weight's row Fisher among the calibration statistics
# Bounds on a row's multiplier. The rule knows nothing of clipping: a step it wants finer than the
# bits can span would cut the row's tails, so no clip ends under MIN_SIGMAS stds of its row (on
# the default checkpoint, without it clip_sigmas 12.85 scored worse than 20 at more bytes; with it
# val_bpb rises with the clip). CLAMP keeps a row the loss never moves (F = 0) to a finite scale.
CLAMP = 8.0
MIN_SIGMAS = 4.0
# Sequences per backward pass: bounds the activations a record-sized calibration batch (48 x 2048
# tokens) would hold for its backward pass.
MICRO_SEQS = 8


def collect_row_fisher(model: nn.Module, batches: list[torch.Tensor],
                       on_progress: Callable[[int], None] | None = None) -> dict[str, torch.Tensor]:
    """Each parameter's row Fisher (rows,): over `batches`, MICRO_SEQS sequences a pass, the mean
    squared next-token loss gradient, averaged over the row; keyed by `name + ROW_FISHER`."""
    params = dict(model.named_parameters())
    sums = {n: torch.zeros(p.size(0) if p.ndim >= 2 else 1, dtype=torch.float64, device=p.device)
            for n, p in params.items()}  # rows as quantize.py views the tensor
    device = next(model.parameters()).device
    model.eval()
    passes = 0
    for batch in batches:
        for x in batch.to(device).split(MICRO_SEQS):  # (b, T): predict 1..T-1 from 0..T-2
            model.zero_grad(set_to_none=True)
            model.loss(x[:, :-1], x[:, 1:]).backward()
            for n, p in params.items():
                if p.grad is not None:
                    sums[n] += p.grad.double().square().reshape(sums[n].numel(), -1).mean(dim=1)
            passes += 1
        if on_progress:
            on_progress(1)
    model.zero_grad(set_to_none=True)
    return {n + ROW_FISHER: (s / passes).float().cpu() for n, s in sums.items()}


def allocate(tensors: dict[str, torch.Tensor], roles: dict, stats: dict[str, torch.Tensor],
             params, clip_rule) -> dict[str, torch.Tensor]:
    """The clip multipliers (rows,) of every tensor quantize.py rounds, from the grid's clips
    (`clip_rule`, as quantize.py calls it) and the row Fisher among the calibration `stats`."""
    from stages.quant.quantize import grid_rows  # quantize.py imports this module lazily

    rows = {}
    for name, t in tensors.items():
        if t.is_floating_point() and t.numel() > params.keep_float_max_numel:  # quantized
            if name + ROW_FISHER not in stats:
                raise QuantizeError(f"quantize.fisher_alpha needs the row Fisher of {name} from "
                                    f"calibration (--calib)")
            if not torch.isfinite(stats[name + ROW_FISHER]).all():  # a diverged model's loss
                raise QuantizeError(f"the row Fisher of {name} is not finite: the calibration "
                                    f"loss overflowed")
            w, qmax, clip = grid_rows(t, roles[name].group, params, clip_rule,
                                      stats.get(name) if t.ndim == 2 else None)
            rows[name] = clip, qmax, w
    return row_multipliers(rows, stats, params.fisher_alpha, CLAMP, MIN_SIGMAS)


def row_multipliers(rows: dict[str, tuple[torch.Tensor, int, torch.Tensor]],
                    fisher: dict[str, torch.Tensor], alpha: float, clamp: float = CLAMP,
                    min_sigmas: float = MIN_SIGMAS) -> dict[str, torch.Tensor]:
    """Each quantized matrix's clip multipliers (rows,), from `rows[name]`: the grid's clip of
    each row (rows,), the tensor's qmax, and its rows (rows, cols); and its row Fisher
    (`fisher[name + ROW_FISHER]`). Rows that no calibration token moved (F = 0) get the
    coarsest step and are left out of the mean; no clip ends under `min_sigmas` stds of its row."""
    # log(D(rule) / D(grid)) per row, D(grid) = clip / qmax; +inf where F = 0
    logs = {name: -0.5 * torch.log(fisher[name + ROW_FISHER].double())
            - torch.log((clip.double() / qmax).clamp_min(1e-30))
            for name, (clip, qmax, _) in rows.items()}
    weighted = torch.cat([torch.stack([v, torch.full_like(v, w.size(1))]) for v, (_, _, w)
                          in zip(logs.values(), rows.values(), strict=True)], dim=1)  # (2, rows)
    seen = weighted[:, weighted[0].isfinite()]
    mean = (seen[0] * seen[1]).sum() / seen[1].sum().clamp_min(1)
    out = {}
    for name, (clip, _, w) in rows.items():
        m = torch.exp(alpha * (logs[name] - mean)).clamp(1 / clamp, clamp)
        floor = min_sigmas * w.double().std(dim=1, unbiased=False) \
            / clip.double().clamp_min(1e-30)
        out[name] = torch.maximum(m, floor).float()
    return out
