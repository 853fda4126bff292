"""LQER: low-rank repair of the quantization error (the best record's last step).

For the matrices with the largest error E = W - dequant(Q), a rank-r SVD E ~ A B is stored beside
the codes, with A = U_r S_r (rows x r) and B = V_r^T (r x cols). The factors are quantized as the
record did: A in int2 ([-2, 1]) with one scale per matrix (max|A| / 1.5), B in int4 ([-8, 7]) with
one scale per group of `group` consecutive values (max|B_g| / 7.5). Dequantization adds A B back.
"""

from __future__ import annotations

import torch


def _quantize_a(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = (a.abs().max() / 1.5).clamp_min(1e-8).reshape(1).half()
    return torch.clamp(torch.round(a / scale.float()), -2, 1).to(torch.int8), scale


def _quantize_b(b: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    flat = b.flatten()
    pad = (-flat.numel()) % group
    groups = torch.cat([flat, flat.new_zeros(pad)]).reshape(-1, group)
    scale = (groups.abs().amax(dim=1) / 7.5).clamp_min(1e-8).half()
    q = torch.clamp(torch.round(groups / scale.float()[:, None]), -8, 7)
    return q.flatten()[:flat.numel()].reshape(b.shape).to(torch.int8), scale


def factors(error: torch.Tensor, rank: int, group: int) -> dict[str, torch.Tensor]:
    """Quantized low-rank factors of `error` (rows x cols), named by their role."""
    u, s, vh = torch.linalg.svd(error.float(), full_matrices=False)
    rank = min(rank, s.numel())
    qa, sa = _quantize_a(u[:, :rank] * s[:rank])
    qb, sb = _quantize_b(vh[:rank], group)
    return {"lqer_a": qa, "lqer_a_scale": sa, "lqer_b": qb, "lqer_b_scale": sb}


def correction(f: dict[str, torch.Tensor], group: int) -> torch.Tensor:
    """The dequantized A B of stored factors."""
    a = f["lqer_a"].float() * f["lqer_a_scale"].float()
    qb = f["lqer_b"].float()
    flat = qb.flatten()
    pad = (-flat.numel()) % group
    groups = torch.cat([flat, flat.new_zeros(pad)]).reshape(-1, group)
    b = (groups * f["lqer_b_scale"].float()[:, None]).flatten()[:flat.numel()].reshape(qb.shape)
    return a @ b
