"""DiT's discrete Gaussian diffusion: linear betas, timestep respacing, posterior tables.

All tables are float64 numpy arrays (as in the official code); a coefficient is read at one
respaced index and cast to float32 before it touches a tensor, which reproduces the official
float32 results.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


def linear_betas(num_timesteps: int = 1000) -> np.ndarray:
    """DiT/ADM 'linear' schedule: linspace(1e-4, 0.02) scaled by 1000/num_timesteps (1 here)."""
    scale = 1000 / num_timesteps
    return np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64)


def space_timesteps(num_timesteps: int, spec: str | int) -> list[int]:
    """Original timesteps kept by a respacing spec, ascending.

    "N" (or "a,b,c" sections): N indices per section at a fractional stride, rounded;
    "ddimN": the first integer stride that gives exactly N indices from 0.
    """
    spec = str(spec)
    if spec.startswith("ddim"):
        wanted = int(spec[len("ddim"):])
        for stride in range(1, num_timesteps):
            if len(range(0, num_timesteps, stride)) == wanted:
                return list(range(0, num_timesteps, stride))
        raise ValueError(f"cannot get exactly {wanted} steps from {num_timesteps} with an integer stride")
    counts = [int(c) for c in spec.split(",")]
    per_section, extra = divmod(num_timesteps, len(counts))
    kept: list[int] = []
    start = 0
    for i, count in enumerate(counts):
        size = per_section + (1 if i < extra else 0)
        if count < 1 or count > size:
            raise ValueError(f"cannot take {count} steps from a section of {size} timesteps")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0  # accumulated by addition, as the official code does (rounding matters)
        for _ in range(count):
            kept.append(start + round(position))
            position += stride
        start += size
    return sorted(set(kept))


@dataclass(frozen=True)
class SpacedDiffusion:
    """The respaced process. Index k in 0..K-1 is a respaced step; the model sees timestep_map[k]."""

    timestep_map: np.ndarray  # (K,) int64, original timesteps
    betas: np.ndarray  # (K,) float64 respaced betas

    @classmethod
    def create(cls, spec: str | int, num_timesteps: int = 1000) -> SpacedDiffusion:
        base_alphas_cumprod = np.cumprod(1.0 - linear_betas(num_timesteps))
        kept = space_timesteps(num_timesteps, spec)
        betas, last = [], 1.0
        for t in kept:  # recompute betas from the kept cumulative alphas
            betas.append(1.0 - base_alphas_cumprod[t] / last)
            last = base_alphas_cumprod[t]
        return cls(np.asarray(kept, dtype=np.int64), np.asarray(betas, dtype=np.float64))

    @property
    def num_steps(self) -> int:
        return len(self.betas)

    @cached_property
    def alphas_cumprod(self) -> np.ndarray:
        return np.cumprod(1.0 - self.betas)

    @cached_property
    def alphas_cumprod_prev(self) -> np.ndarray:
        return np.append(1.0, self.alphas_cumprod[:-1])

    @cached_property
    def posterior_variance(self) -> np.ndarray:
        abar, abar_prev = self.alphas_cumprod, self.alphas_cumprod_prev
        return self.betas * (1.0 - abar_prev) / (1.0 - abar)

    @cached_property
    def posterior_log_variance_clipped(self) -> np.ndarray:
        # The variance at k=0 is 0; the official code substitutes the value at k=1.
        # (A single-step process has no k=1; its beta stands in.)
        return np.log(np.append(self.posterior_variance_at_1, self.posterior_variance[1:]))

    @cached_property
    def posterior_variance_at_1(self) -> float:
        return float(self.posterior_variance[1] if self.num_steps > 1 else self.betas[0])

    @cached_property
    def posterior_mean_coef1(self) -> np.ndarray:
        return self.betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)

    @cached_property
    def posterior_mean_coef2(self) -> np.ndarray:
        return (1.0 - self.alphas_cumprod_prev) * np.sqrt(1.0 - self.betas) / (1.0 - self.alphas_cumprod)

    @cached_property
    def log_betas(self) -> np.ndarray:
        return np.log(self.betas)

    @cached_property
    def sqrt_recip_alphas_cumprod(self) -> np.ndarray:
        return np.sqrt(1.0 / self.alphas_cumprod)

    @cached_property
    def sqrt_recipm1_alphas_cumprod(self) -> np.ndarray:
        return np.sqrt(1.0 / self.alphas_cumprod - 1.0)
