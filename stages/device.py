"""Which device a stage runs on, and whether bf16 is fast there."""

from __future__ import annotations

import torch

from stages.errors import GolfError


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls run natively on `device`: on CUDA when the GPU supports bf16; on a CPU
    only with AVX512-BF16 or AMX. Elsewhere torch emulates them: on an AVX2-only CPU a bf16 matmul
    is about 70 times slower than the fp32 one, so bf16 would only cost time."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu, x86 only
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def resolve_device(name: str) -> torch.device:
    """'auto' is CUDA when available, else CPU; asking for CUDA without it is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise GolfError("device 'cuda' was asked for but CUDA is not available")
    return torch.device(name)
