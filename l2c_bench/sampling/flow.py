"""Euler over the rectified-flow ODE, for the flow-matching transformers (SD3, Flux).

The schedule is diffusers' `FlowMatchEulerDiscreteScheduler` with a static shift (SD3: 3.0):
sigmas from 1 towards 0, timesteps = 1000 * sigma, one model evaluation per step, and
x_{k+1} = x_k + (sigma_{k+1} - sigma_k) * v(x_k, t_k). One evaluation per step keeps the plan's
evaluation index equal to the step index.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm


class FlowEulerSteps:
    """The timesteps (nfe,) and sigmas (nfe + 1,) of one `generate` call, made once."""

    def __init__(self, nfe: int, shift: float, device: torch.device):
        from diffusers import FlowMatchEulerDiscreteScheduler

        scheduler = FlowMatchEulerDiscreteScheduler(shift=float(shift))
        scheduler.set_timesteps(nfe, device=device)
        self.timesteps = scheduler.timesteps.float()  # (nfe,) model time, 1000 * sigma
        self.sigmas = scheduler.sigmas.float()  # (nfe + 1,), the last 0
        self.deltas = (self.sigmas[1:] - self.sigmas[:-1]).tolist()


def flow_euler_sample(denoise, x: torch.Tensor, steps: FlowEulerSteps, progress: bool = False) -> torch.Tensor:
    """denoise(x (N, C, H, W), t (N,)) -> velocity; returns x at sigma 0."""
    for k in tqdm(range(len(steps.deltas)), disable=not progress, desc="flow euler", leave=False):
        t = steps.timesteps[k].expand(len(x))
        x = x + steps.deltas[k] * denoise(x, t)
    return x
