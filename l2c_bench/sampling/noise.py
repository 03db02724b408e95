"""Per-sample noise: sample i depends only on its own seed, never on batch size or device count."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def sample_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def initial_noise(generators: Sequence[torch.Generator], shape: tuple[int, int, int],
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """x_T[i] = randn(shape, generator=Generator().manual_seed(seed_i)): (N, C, H, W).

    The same generators then feed any later noise (DDPM, DDIM eta > 0) in sampling order.
    """
    return torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device)
