"""Per-sample noise: sample i depends only on its own seed, never on batch size or device count."""

from __future__ import annotations

from collections.abc import Sequence

import torch

# Run seed s owns the sample seeds [s * SEED_STRIDE, (s + 1) * SEED_STRIDE): runs at different
# `seed` values draw disjoint noise, so their rows are independent repeats (analysis.uncertainty
# pools them), and seed 0's sample i keeps seed i. torch's CPU generator (mt19937) keeps only the
# low 32 bits of a seed (manual_seed(2**32 + i) draws what manual_seed(i) draws), so the blocks
# must tile 32 bits: 2**20 samples per run (50,000 at paper scale) and 4096 run seeds.
SEED_STRIDE = 2**20
MAX_RUN_SEED = 2**32 // SEED_STRIDE - 1


def sample_seed(run_seed: int, index: int) -> int:
    """The generator seed of sample `index` of a run at `seed=run_seed`: run_seed * SEED_STRIDE + index."""
    if not 0 <= int(run_seed) <= MAX_RUN_SEED:
        raise ValueError(f"seed must be in [0, {MAX_RUN_SEED}], got {run_seed}")
    if not 0 <= int(index) < SEED_STRIDE:
        raise ValueError(f"sample index must be in [0, {SEED_STRIDE}) (metrics.num_samples <= {SEED_STRIDE}), "
                         f"got {index}")
    return int(run_seed) * SEED_STRIDE + int(index)


def sample_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def initial_noise(generators: Sequence[torch.Generator], shape: tuple[int, int, int],
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """x_T[i] = randn(shape, generator=Generator().manual_seed(seed_i)): (N, C, H, W).

    The same generators then feed any later noise (DDPM, DDIM eta > 0) in sampling order.
    """
    return torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device)
