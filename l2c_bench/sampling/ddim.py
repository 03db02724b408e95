"""DDIM (any eta) and ancestral DDPM over DiT's respaced process.

`denoise(x, t_model)` is the (guided) model: x (N, C, H, W), t_model (N,) original timesteps
-> (N, C or 2C, H, W); with 2C channels the second half is DiT's learned-range variance.
Respaced index k runs from K-1 (first evaluation) down to 0 (last).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .diffusion import SpacedDiffusion

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class DiffusionTables:
    """The diffusion's float64 tables cast once to float32 tensors on the sampling device.

    The official code reads a float64 entry and casts it to float32 before it touches a tensor;
    casting the whole table up front gives the same values and no host-device copy per step.
    """

    _NAMES = ("alphas_cumprod", "alphas_cumprod_prev", "log_betas", "posterior_log_variance_clipped",
              "posterior_mean_coef1", "posterior_mean_coef2", "sqrt_recip_alphas_cumprod",
              "sqrt_recipm1_alphas_cumprod")

    def __init__(self, diffusion: SpacedDiffusion, device: torch.device):
        for name in self._NAMES:
            setattr(self, name, torch.tensor(getattr(diffusion, name), dtype=torch.float32, device=device))
        fixed_large = np.log(np.append(diffusion.posterior_variance_at_1, diffusion.betas[1:]))
        self.fixed_large_log_variance = torch.tensor(fixed_large, dtype=torch.float32, device=device)
        self.timestep_map = torch.tensor(diffusion.timestep_map, dtype=torch.long, device=device)


def step_noise(generators: Sequence[torch.Generator], like: torch.Tensor) -> torch.Tensor:
    """One N(0, 1) draw per sample from its own generator (CPU), so batches never mix streams."""
    noise = torch.stack([torch.randn(like.shape[1:], generator=g) for g in generators])
    return noise.to(device=like.device, dtype=like.dtype)


def p_mean_variance(tables: DiffusionTables, model_output: torch.Tensor, x: torch.Tensor, k: int):
    """Posterior mean, log-variance and x0 prediction at respaced index k (EPSILON mean).

    With 2C output channels the variance is learned-range; with C it is 'fixed large'.
    """
    channels = x.shape[1]
    eps = model_output[:, :channels]
    if model_output.shape[1] == 2 * channels:
        frac = (model_output[:, channels:] + 1) / 2
        log_variance = (frac * tables.log_betas[k]
                        + (1 - frac) * tables.posterior_log_variance_clipped[k])
    else:
        log_variance = tables.fixed_large_log_variance[k].expand_as(x)
    pred_x0 = tables.sqrt_recip_alphas_cumprod[k] * x - tables.sqrt_recipm1_alphas_cumprod[k] * eps
    mean = tables.posterior_mean_coef1[k] * pred_x0 + tables.posterior_mean_coef2[k] * x
    return mean, log_variance, pred_x0


def model_timesteps(tables: DiffusionTables, x: torch.Tensor, k: int) -> torch.Tensor:
    return tables.timestep_map[k].expand(x.shape[0])


def ddim_sample(denoise: Denoiser, x: torch.Tensor, diffusion: SpacedDiffusion, *, eta: float = 0.0,
                generators: Sequence[torch.Generator] | None = None, progress: bool = False,
                tables: DiffusionTables | None = None) -> torch.Tensor:
    """DDIM from x_T (N, C, H, W); eta 0 is deterministic (the L2C DiT setting). `tables`:
    `diffusion`'s, already on x's device (a CUDA graph capture may not copy from the host)."""
    if eta < 0:
        raise ValueError(f"sampler.eta must be >= 0, got {eta}")
    if eta > 0 and generators is None:
        raise ValueError("DDIM with eta > 0 needs per-sample generators for its noise")
    if tables is None:
        tables = DiffusionTables(diffusion, x.device)
    for k in tqdm(range(diffusion.num_steps - 1, -1, -1), disable=not progress, desc="ddim", leave=False):
        x, sigma = ddim_update(tables, denoise(x, model_timesteps(tables, x, k)), x, k, eta)
        if eta > 0 and k > 0:
            x = x + sigma * step_noise(generators, x)
    return x


def ddim_update(tables: DiffusionTables, model_output: torch.Tensor, x: torch.Tensor, k: int, eta: float = 0.0):
    """One DDIM step from respaced index k to k-1 given the model output at k:
    (the deterministic part of x_{k-1}, sigma); the caller adds sigma * noise when eta > 0."""
    _, _, pred_x0 = p_mean_variance(tables, model_output, x, k)
    eps = (tables.sqrt_recip_alphas_cumprod[k] * x - pred_x0) / tables.sqrt_recipm1_alphas_cumprod[k]
    a, a_prev = tables.alphas_cumprod[k], tables.alphas_cumprod_prev[k]
    sigma = eta * torch.sqrt((1 - a_prev) / (1 - a)) * torch.sqrt(1 - a / a_prev)
    return pred_x0 * torch.sqrt(a_prev) + torch.sqrt(1 - a_prev - sigma**2) * eps, sigma


def q_sample(tables: DiffusionTables, x0: torch.Tensor, noise: torch.Tensor, k: int) -> torch.Tensor:
    """x0 noised to respaced index k: sqrt(abar_k) x0 + sqrt(1 - abar_k) noise."""
    a = tables.alphas_cumprod[k]
    return torch.sqrt(a) * x0 + torch.sqrt(1 - a) * noise


def ddpm_sample(denoise: Denoiser, x: torch.Tensor, diffusion: SpacedDiffusion, *,
                generators: Sequence[torch.Generator], progress: bool = False,
                tables: DiffusionTables | None = None) -> torch.Tensor:
    """Ancestral sampling (DiT's `p_sample_loop`); no noise is added at the last step."""
    if tables is None:
        tables = DiffusionTables(diffusion, x.device)
    for k in tqdm(range(diffusion.num_steps - 1, -1, -1), disable=not progress, desc="ddpm", leave=False):
        out = denoise(x, model_timesteps(tables, x, k))
        mean, log_variance, _ = p_mean_variance(tables, out, x, k)
        x = mean + torch.exp(0.5 * log_variance) * step_noise(generators, x) if k > 0 else mean
    return x
