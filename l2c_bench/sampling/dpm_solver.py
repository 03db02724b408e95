"""DPM-Solver in data-prediction form over U-ViT's discrete SD-beta schedule.

Two samplers (Lu et al. 2022, DPM-Solver / DPM-Solver++ with `solver_type='dpm_solver'`):
- `dpm_solver2_sample`: singlestep order 2, NFE/2 steps uniform in t from 1 to 1e-3, each
  evaluating the model at s and at the log-SNR midpoint s1 (r1 = 0.5) -- the L2C U-ViT setting.
- `dpm_solver_fast_sample`: U-ViT's default 'fast' schedule: a t-uniform grid of NFE+1 points
  covered by singlestep updates of orders [3, ..., 3, 2|1] whose inner points are grid points.

`denoise(x, t_model)` returns eps (N, C, H, W) with t_model = 1000 * t (fractional).
Coefficients are computed in float32 as the official implementation does.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

T_START, T_END = 1.0, 1e-3


def sd_betas(num_timesteps: int = 1000) -> np.ndarray:
    """Stable-diffusion schedule: linear in sqrt(beta) from 0.00085 to 0.012, float64."""
    return np.linspace(0.00085**0.5, 0.012**0.5, num_timesteps, dtype=np.float64) ** 2


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation of (xp ascending, fp), extended linearly past both ends."""
    idx = (torch.searchsorted(xp, x.contiguous()) - 1).clamp(0, xp.numel() - 2)
    x0, x1, y0, y1 = xp[idx], xp[idx + 1], fp[idx], fp[idx + 1]
    return y0 + (x - x0) * (y1 - y0) / (x1 - x0)


class DiscreteVPSchedule:
    """log(alpha_t) interpolated over t_n = n/N (n = 1..N) from 0.5*cumsum(log(1 - beta))."""

    def __init__(self, betas: np.ndarray | None = None):
        betas32 = torch.tensor(sd_betas() if betas is None else betas, dtype=torch.float32)
        self.log_alpha_array = 0.5 * torch.log(1 - betas32).cumsum(dim=0)  # (N,) decreasing
        n = betas32.numel()
        self.t_array = torch.linspace(0.0, 1.0, n + 1)[1:]  # (N,) ascending

    def log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return _interp(t, self.t_array, self.log_alpha_array)

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.log_alpha(t))

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(1.0 - torch.exp(2.0 * self.log_alpha(t)))

    def lam(self, t: torch.Tensor) -> torch.Tensor:
        """Half log-SNR: log(alpha) - log(sigma)."""
        log_alpha = self.log_alpha(t)
        return log_alpha - 0.5 * torch.log(1.0 - torch.exp(2.0 * log_alpha))

    def inverse_lam(self, lam: torch.Tensor) -> torch.Tensor:
        log_alpha = -0.5 * torch.logaddexp(torch.zeros_like(lam), -2.0 * lam)
        return _interp(log_alpha, self.log_alpha_array.flip(0), self.t_array.flip(0))


class DataPrediction:
    """x0(x, t) = (x - sigma_t * eps) / alpha_t, evaluating the eps-model at t_model = 1000 t."""

    def __init__(self, denoise: Denoiser, schedule: DiscreteVPSchedule):
        self.denoise, self.schedule = denoise, schedule

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t_dev = t.to(x.device)
        eps = self.denoise(x, (t_dev * 1000.0).expand(x.shape[0]))
        alpha, sigma = self.schedule.alpha(t).to(x.device), self.schedule.sigma(t).to(x.device)
        return (x - sigma * eps) / alpha


def solver_update(model_x0: DataPrediction, schedule: DiscreteVPSchedule, x: torch.Tensor,
            s: torch.Tensor, t: torch.Tensor, order: int, r1=None, r2=None) -> torch.Tensor:
    """One singlestep DPM-Solver++ update of `order` from s to t (scalars, float32 tensors)."""
    dev = x.device
    lam_s, lam_t = schedule.lam(s), schedule.lam(t)
    h = lam_t - lam_s
    sigma_s, sigma_t = schedule.sigma(s), schedule.sigma(t)
    alpha_t = schedule.alpha(t)
    phi_1 = torch.expm1(-h)
    x0_s = model_x0(x, s)
    if order == 1:
        return (sigma_t / sigma_s).to(dev) * x - (alpha_t * phi_1).to(dev) * x0_s
    r1 = torch.as_tensor(0.5 if r1 is None else r1, dtype=torch.float32)
    s1 = schedule.inverse_lam(lam_s + r1 * h)
    x_s1 = (schedule.sigma(s1) / sigma_s).to(dev) * x - (
        schedule.alpha(s1) * torch.expm1(-r1 * h)
    ).to(dev) * x0_s
    x0_s1 = model_x0(x_s1, s1)
    if order == 2:
        return ((sigma_t / sigma_s).to(dev) * x - (alpha_t * phi_1).to(dev) * x0_s
                - (0.5 / r1 * alpha_t * phi_1).to(dev) * (x0_s1 - x0_s))
    r2 = torch.as_tensor(2.0 / 3.0 if r2 is None else r2, dtype=torch.float32)
    s2 = schedule.inverse_lam(lam_s + r2 * h)
    phi_22 = torch.expm1(-r2 * h) / (r2 * h) + 1.0
    phi_2 = phi_1 / h + 1.0
    x_s2 = ((schedule.sigma(s2) / sigma_s).to(dev) * x
            - (schedule.alpha(s2) * torch.expm1(-r2 * h)).to(dev) * x0_s
            + (r2 / r1 * schedule.alpha(s2) * phi_22).to(dev) * (x0_s1 - x0_s))
    x0_s2 = model_x0(x_s2, s2)
    return ((sigma_t / sigma_s).to(dev) * x - (alpha_t * phi_1).to(dev) * x0_s
            + (1.0 / r2 * alpha_t * phi_2).to(dev) * (x0_s2 - x0_s))


def time_grid(num_intervals: int) -> torch.Tensor:
    """t-uniform grid from 1 to 1e-3 with num_intervals + 1 points (float32)."""
    return torch.linspace(T_START, T_END, num_intervals + 1)


class DPMSolver2Steps:
    """Every per-step coefficient of singlestep DPM-Solver-2 (r1 = 1/2) for an NFE, computed once
    on the host in float32 exactly as `solver_update` computes them, then moved to the device in
    one copy: the sampling loop does no host work and no host-device transfer per step."""

    # columns of `table`: model times, x0 conversion at s and s1, and the update's coefficients
    COLUMNS = ("t_s", "t_s1", "sigma_s", "alpha_s", "sigma_s1", "alpha_s1", "a1", "b1", "a", "b", "c")

    def __init__(self, nfe: int, schedule: DiscreteVPSchedule, device: torch.device):
        grid = time_grid(nfe // 2)
        rows = []
        r1 = torch.as_tensor(0.5, dtype=torch.float32)
        for i in range(nfe // 2):
            s, t = grid[i : i + 1], grid[i + 1 : i + 2]
            lam_s, lam_t = schedule.lam(s), schedule.lam(t)
            h = lam_t - lam_s
            sigma_s, sigma_t, alpha_t = schedule.sigma(s), schedule.sigma(t), schedule.alpha(t)
            phi_1 = torch.expm1(-h)
            s1 = schedule.inverse_lam(lam_s + r1 * h)
            rows.append(torch.cat([
                s * 1000.0, s1 * 1000.0, sigma_s, schedule.alpha(s), schedule.sigma(s1), schedule.alpha(s1),
                schedule.sigma(s1) / sigma_s, schedule.alpha(s1) * torch.expm1(-r1 * h),  # x_s1 = a1 x - b1 x0_s
                sigma_t / sigma_s, alpha_t * phi_1, 0.5 / r1 * alpha_t * phi_1,  # x_t = a x - b x0_s - c (x0_s1 - x0_s)
            ]))
        self.table = torch.stack(rows).to(device)  # (steps, 11) float32

    def __len__(self) -> int:
        return len(self.table)


def dpm_solver2_sample(denoise: Denoiser, x: torch.Tensor, nfe: int, *,
                       schedule: DiscreteVPSchedule | None = None, progress: bool = False,
                       steps: DPMSolver2Steps | None = None) -> torch.Tensor:
    """Singlestep DPM-Solver-2 with NFE/2 t-uniform steps; the 2 evaluations of a step are
    (first: at s, the L2C cache step) then (second: at the log-SNR midpoint). `steps`: the
    coefficients, already on x's device (a CUDA graph capture may not copy from the host)."""
    if nfe < 2 or nfe % 2:
        raise ValueError(f"steps (NFE) must be a positive even number for dpm_solver2, got {nfe}")
    if steps is not None and 2 * len(steps) != nfe:
        raise ValueError(f"the prepared DPM-Solver-2 steps are for NFE {2 * len(steps)}, not {nfe}")
    if steps is None:
        steps = DPMSolver2Steps(nfe, schedule or DiscreteVPSchedule(), x.device)
    n = x.shape[0]
    for i in tqdm(range(len(steps)), disable=not progress, desc="dpm_solver2", leave=False):
        t_s, t_s1, sigma_s, alpha_s, sigma_s1, alpha_s1, a1, b1, a, b, c = steps.table[i]
        x0_s = (x - sigma_s * denoise(x, t_s.expand(n))) / alpha_s
        x_s1 = a1 * x - b1 * x0_s
        x0_s1 = (x_s1 - sigma_s1 * denoise(x_s1, t_s1.expand(n))) / alpha_s1
        x = a * x - b * x0_s - c * (x0_s1 - x0_s)
    return x


def fast_orders(nfe: int) -> list[int]:
    """Orders of U-ViT's 'fast' singlestep schedule for `nfe` evaluations (50 -> [3]*16 + [2])."""
    k = nfe // 3 + 1
    if nfe % 3 == 0:
        return [3] * (k - 2) + [2, 1]
    if nfe % 3 == 1:
        return [3] * (k - 1) + [1]
    return [3] * (k - 1) + [2]


def dpm_solver_fast_sample(denoise: Denoiser, x: torch.Tensor, nfe: int, *,
                           schedule: DiscreteVPSchedule | None = None, progress: bool = False) -> torch.Tensor:
    """U-ViT's default sampler: orders from `fast_orders`, inner points on the t-uniform grid."""
    if nfe < 1:
        raise ValueError(f"steps (NFE) must be >= 1 for dpm_solver_fast, got {nfe}")
    schedule = schedule or DiscreteVPSchedule()
    model_x0 = DataPrediction(denoise, schedule)
    grid = time_grid(nfe)
    i = 0
    for order in tqdm(fast_orders(nfe), disable=not progress, desc="dpm_solver_fast", leave=False):
        lam = schedule.lam(grid[i : i + order + 1])
        h = lam[-1] - lam[0]
        r1 = (lam[1] - lam[0]) / h if order > 1 else None
        r2 = (lam[2] - lam[0]) / h if order > 2 else None
        x = solver_update(model_x0, schedule, x, grid[i : i + 1], grid[i + order : i + order + 1], order, r1, r2)
        i += order
    return x
