"""Which device a stage runs on."""

from __future__ import annotations

import torch

from stages.errors import GolfError


def resolve_device(name: str) -> torch.device:
    """'auto' is CUDA when available, else CPU; asking for CUDA without it is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise GolfError("device 'cuda' was asked for but CUDA is not available")
    return torch.device(name)
