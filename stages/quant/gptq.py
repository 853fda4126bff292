"""GPTQ (Frantar et al., 2022; the records' "full GPTQ") as a rounding method.

Columns are quantized one at a time, and each column's rounding error is pushed onto the columns not
yet quantized, weighted by the inverse Hessian of the layer's inputs, so the layer's *output* error
stays small rather than the weight error. The scales are fixed up front by the grid.

    H = mean X^T X over calibration inputs   (given; columns x columns)
    dead columns (H_jj = 0): H_jj = 1 and the column is zeroed
    H += damp * mean(diag H) * I
    act-order: process columns by decreasing H_jj, un-permute at the end
    U = upper Cholesky factor of H^-1; blocks of `block` columns, errors propagated inside the
    block column by column and to the rest of the matrix once per block

With `rate_lambda` > 0 each code is chosen by rate-aware rounding (rate.py) instead of to
nearest; its error is fed forward like any other rounding error, so later columns absorb it.
"""

from __future__ import annotations

import torch

from stages.quant.registry import METHODS, QuantizeError


def _inverse_cholesky_upper(h: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of H^-1, raising the damping until H is positive definite."""
    eye = torch.eye(h.size(0), dtype=h.dtype, device=h.device)
    mean_diag = torch.diagonal(h).mean().clamp_min(1e-12)
    for attempt in range(6):
        damped = h + (damp * 10**attempt) * mean_diag * eye
        chol, info = torch.linalg.cholesky_ex(damped)
        if info.item() == 0:
            return torch.linalg.cholesky(torch.cholesky_inverse(chol), upper=True)
    raise QuantizeError("GPTQ: the calibration Hessian is not positive definite even with damping")


def gptq(w: torch.Tensor, scale: torch.Tensor, qmax: int, *, hessian: torch.Tensor | None = None,
         block: int = 128, damp: float = 0.01, act_order: bool = True, rate_lambda: float = 0.0,
         **_context) -> torch.Tensor:
    """Codes in [-qmax, qmax] for `w` (rows, cols) with per-row `scale`, by GPTQ.

    Args:
        w: the weight matrix, rows = outputs, cols = inputs.
        scale: one scale per row (from the grid, already rounded to its storage precision).
        qmax: the largest code magnitude (31 for int6).
        hessian: mean X^T X of the layer's inputs (cols x cols); required.
        block: columns per block of lazy error propagation.
        damp: diagonal damping, as a fraction of the mean diagonal.
        act_order: quantize columns with the largest Hessian diagonal first.
        rate_lambda: weight of a code's bits in the rounding (0: nearest; rate.py).
    """
    if hessian is None:
        raise QuantizeError("quantize.method 'gptq' needs calibration data (--calib DATA_DIR or "
                            "--calib self)")
    W = w.double().clone()
    H = hessian.to(W.device).double().clone()
    s = scale.to(W.device).double()[:, None]
    if rate_lambda > 0:
        from stages.quant.rate import rate_rounding  # only rate-aware runs (a bundle may lack it)
        round_codes = rate_rounding(W / s, qmax, rate_lambda)
    else:
        def round_codes(x: torch.Tensor) -> torch.Tensor:
            return torch.clamp(torch.round(x), -qmax, qmax)
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    perm = torch.argsort(torch.diagonal(H), descending=True) if act_order else \
        torch.arange(W.size(1), device=W.device)
    W, H = W[:, perm], H[perm][:, perm]
    U = _inverse_cholesky_upper(H, damp)

    Q = torch.zeros_like(W)
    cols = W.size(1)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        W1 = W[:, i1:i2].clone()
        E1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        for j in range(i2 - i1):
            col = W1[:, j:j + 1]
            q = round_codes(col / s)
            Q[:, i1 + j:i1 + j + 1] = q
            err = (col - q * s) / U1[j, j]
            W1[:, j:] -= err * U1[j:j + 1, j:]
            E1[:, j:j + 1] = err
        W[:, i2:] -= E1 @ U[i1:i2, i2:]
    return Q[:, torch.argsort(perm)].to(torch.int8).cpu()


METHODS["gptq"] = gptq
