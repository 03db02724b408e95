"""Training pairs: a full sampler step that fills the cache, then the cache step it feeds.

The pairing is the one used at inference (`caching.methods.l2c.pairing.l2c_cache_steps`):
- DiT + DDIM: cache evaluation at respaced index i (even) with router row i; its full step is
  the DDIM step from index i+1. Data are noised to i+1 with the respaced schedule. With a longer
  cycle (interval k), cache step i reuses the full step at i+d (d = 1..k-1): data are noised to
  i+d, the full evaluation there fills the cache, and d-1 further uncached DDIM steps (no grad,
  not recorded) bring x to index i.
- U-ViT + DPM-Solver-2: cache evaluation 2k (the first evaluation of solver step k, router row
  k) reuses the midpoint evaluation of step k-1. Data are noised to the grid time t_{k-1}; one
  full solver step (two evaluations, the second overwriting the first in the cache) reaches t_k.
The official U-ViT script feeds the model round(1000 t) at the cache step and noises with the
rounded discrete time; we use the exact times the sampler uses at inference (1000 t).

`prepare(...)` returns the cache step's input (x, t_model) under `torch.no_grad()`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .....sampling.ddim import DiffusionTables, ddim_update, model_timesteps, q_sample
from .....sampling.diffusion import SpacedDiffusion
from .....sampling.dpm_solver import DataPrediction, DiscreteVPSchedule, solver_update, time_grid
from .....sampling.flow import FlowEulerSteps
from ..pairing import l2c_cache_steps, l2c_cycle

# model(x (N,C,H,W), t_model (N,), labels (N,), runner) -> output
Model = Callable[..., torch.Tensor]


class DiTDDIMPairs:
    def __init__(self, nfe: int, device: torch.device, interval: int = 2):
        cycle = l2c_cycle("dit", "ddim", nfe, interval=interval)
        self.pairs = [(n, row) for n, row, _ in cycle]  # [(evaluation, row = respaced index)]
        self.distance = {row: d for _, row, d in cycle}
        self.tables = DiffusionTables(SpacedDiffusion.create(nfe), device)

    @torch.no_grad()
    def prepare(self, model: Model, x0, labels, noise, row: int, runner):
        full = row + self.distance[row]
        x = q_sample(self.tables, x0, noise, full)
        for index in range(full, row, -1):  # the full step (recorded), then uncached steps to `row`
            out = model(x, model_timesteps(self.tables, x, index), labels, runner if index == full else None)
            x, _ = ddim_update(self.tables, out, x, index, eta=0.0)
        return x, model_timesteps(self.tables, x, row)


class UViTDPMPairs:
    def __init__(self, nfe: int, device: torch.device):
        self.pairs = l2c_cache_steps("uvit", "dpm_solver2", nfe)  # [(2k, k)]
        self.schedule = DiscreteVPSchedule()
        self.grid = time_grid(nfe // 2)  # (steps + 1,) from 1 down to 1e-3

    @torch.no_grad()
    def prepare(self, model: Model, x0, labels, noise, row: int, runner):
        s, t = self.grid[row - 1 : row], self.grid[row : row + 1]
        dev = x0.device
        x = self.schedule.alpha(s).to(dev) * x0 + self.schedule.sigma(s).to(dev) * noise
        model_x0 = DataPrediction(lambda x_, t_: model(x_, t_, labels, runner), self.schedule)
        x_next = solver_update(model_x0, self.schedule, x, s, t, order=2, r1=0.5)
        return x_next, (t.to(dev) * 1000.0).expand(x0.shape[0])


class FlowEulerPairs:
    """Flow models + Euler: the DDIM cycle (one evaluation per step, router row = nfe-1-n). Data
    are moved to the full step's sigma on the straight path, x = (1 - sigma) x0 + sigma noise; the
    full evaluation fills the cache and Euler steps (the first recorded) reach the cache step."""

    def __init__(self, nfe: int, device: torch.device, interval: int = 2, shift: float = 3.0):
        cycle = l2c_cycle("flow", "flow_euler", nfe, interval=interval)
        self.pairs = [(n, row) for n, row, _ in cycle]
        self.evaluation = {row: (n, d) for n, row, d in cycle}
        self.steps = FlowEulerSteps(nfe, shift, device)

    @torch.no_grad()
    def prepare(self, model: Model, x0, labels, noise, row: int, runner):
        n, d = self.evaluation[row]
        sigma = self.steps.sigmas[n - d]
        x = (1 - sigma) * x0 + sigma * noise
        for k in range(n - d, n):  # the full step (recorded), then uncached steps to evaluation n
            t = self.steps.timesteps[k].expand(len(x))
            x = x + self.steps.deltas[k] * model(x, t, labels, runner if k == n - d else None)
        return x, self.steps.timesteps[n].expand(len(x))


def make_pairs(family: str, sampler: str, nfe: int, device: torch.device, interval: int = 2, flow_shift: float = 3.0):
    """The training pairs for (family, sampler, NFE, cycle); other combinations are unsupported."""
    l2c_cycle(family, sampler, nfe, interval=interval)  # raises UnsupportedCombination with the valid pairs
    if family == "flow":
        pairs = FlowEulerPairs(nfe, device, interval, flow_shift)
    else:
        pairs = DiTDDIMPairs(nfe, device, interval) if family == "dit" else UViTDPMPairs(nfe, device)
    if not pairs.pairs:
        raise ValueError(f"{family}+{sampler} at {nfe} NFE has no cache step to learn a router for")
    return pairs
