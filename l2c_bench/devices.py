"""Device choice and peak-memory reading, shared by `run.py` and `bench.py`."""

from __future__ import annotations

import resource

import torch


def resolve_device(name: str) -> torch.device:
    """`auto` -> cuda if available, else cpu; an unavailable CUDA device is an error naming `device`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available; use device=cpu or auto")
    return device


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated device memory (CUDA), or the process's peak RSS (CPU), in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
