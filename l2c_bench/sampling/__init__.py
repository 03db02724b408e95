"""Samplers by name. `steps` always means NFE (model evaluations per sample, per guidance pass)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .ddim import DiffusionTables, ddim_sample, ddpm_sample
from .diffusion import SpacedDiffusion, space_timesteps
from .dpm_solver import (
    DiscreteVPSchedule,
    DPMSolver2Steps,
    dpm_solver2_sample,
    dpm_solver_fast_sample,
)
from .flow import FlowEulerSteps, flow_euler_sample
from .guidance import CONVENTIONS, GUIDANCE_OFF, GuidedDenoiser
from .noise import SEED_STRIDE, initial_noise, sample_generators, sample_seed


def _spaced(nfe: int, device, model) -> tuple:
    """DiT's respaced diffusion and its per-step tables on the device."""
    diffusion = SpacedDiffusion.create(nfe)
    return diffusion, DiffusionTables(diffusion, device)


def _dpm_solver2_steps(nfe: int, device, model) -> tuple:
    return None, DPMSolver2Steps(nfe, DiscreteVPSchedule(), device)


def _flow_steps(nfe: int, device, model) -> tuple:
    return None, FlowEulerSteps(nfe, model.flow_shift, device)  # the shift belongs to the model (SD3: 3.0)


def _nothing(nfe: int, device, model) -> tuple:
    return None, None  # dpm_solver_fast: orders and coefficients vary per update, computed in its loop


def _run_ddim(denoise, x, nfe, generators, eta, progress, prepared):
    diffusion, tables = prepared
    return ddim_sample(denoise, x, diffusion, eta=eta, generators=generators, progress=progress, tables=tables)


def _run_ddpm(denoise, x, nfe, generators, eta, progress, prepared):
    diffusion, tables = prepared
    return ddpm_sample(denoise, x, diffusion, generators=generators, progress=progress, tables=tables)


def _run_dpm_solver2(denoise, x, nfe, generators, eta, progress, prepared):
    return dpm_solver2_sample(denoise, x, nfe, progress=progress, steps=prepared[1])


def _run_dpm_solver_fast(denoise, x, nfe, generators, eta, progress, prepared):
    return dpm_solver_fast_sample(denoise, x, nfe, progress=progress)


def _run_flow_euler(denoise, x, nfe, generators, eta, progress, prepared):
    return flow_euler_sample(denoise, x, prepared[1], progress=progress)


@dataclass(frozen=True)
class SamplerSpec:
    family: str  # the model family whose training schedule and time convention it uses
    stochastic: bool
    description: str
    # (nfe, device, model) -> (DiT's respaced diffusion or None, per-step coefficients or None):
    # made once per `generate` call, outside every batch's loop
    prepare: Callable[..., tuple]
    # (denoise, x, nfe, generators, eta, progress, prepared) -> the final state x
    run: Callable[..., torch.Tensor]
    default: bool = False  # its family's ODE sampler: its default, and what the converged reference and router data use


# the one sampler registry: `generate` runs a sampler through its entry, and each family's
# default sampler is the entry marked `default`
SAMPLERS = {
    "ddim": SamplerSpec("dit", False, "DDIM over DiT's respaced linear schedule (eta 0 by default)",
                        _spaced, _run_ddim, default=True),
    "ddpm": SamplerSpec("dit", True, "ancestral DDPM with learned variance (DiT's p_sample_loop)", _spaced, _run_ddpm),
    "dpm_solver2": SamplerSpec("uvit", False, "singlestep DPM-Solver-2, t-uniform, data prediction",
                               _dpm_solver2_steps, _run_dpm_solver2, default=True),
    "dpm_solver_fast": SamplerSpec("uvit", False, "U-ViT's default 'fast' DPM-Solver (orders 3..3,2)",
                                   _nothing, _run_dpm_solver_fast),
    "flow_euler": SamplerSpec("flow", False, "Euler over the rectified-flow ODE (diffusers' shifted flow-match schedule)",
                              _flow_steps, _run_flow_euler, default=True),
}

# each family's ODE sampler: its default, and what the converged reference and router data use
DEFAULT_SAMPLERS = {spec.family: name for name, spec in SAMPLERS.items() if spec.default}


def check_sampler(name: str, family: str, nfe: int) -> SamplerSpec:
    """Fail before any compute on an unknown sampler, a family mismatch or an impossible NFE."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler.name={name!r} is unknown; valid: {', '.join(SAMPLERS)}")
    spec = SAMPLERS[name]
    if spec.family != family:
        valid = [n for n, s in SAMPLERS.items() if s.family == family]
        raise ValueError(
            f"sampler.name={name!r} works with {spec.family} models (their noise schedule and time "
            f"convention), not {family}; valid for {family}: {', '.join(valid)}"
        )
    if not isinstance(nfe, int) or nfe < 1:
        raise ValueError(f"steps must be a positive integer (NFE), got {nfe!r}")
    if name == "dpm_solver2" and nfe % 2:
        raise ValueError(f"steps={nfe} is odd, but dpm_solver2 takes 2 evaluations per step: use an even NFE")
    if name in ("ddim", "ddpm") and nfe > 1000:
        raise ValueError(f"steps={nfe} exceeds DiT's 1000 training timesteps")
    return spec


__all__ = [
    "CONVENTIONS",
    "DEFAULT_SAMPLERS",
    "GUIDANCE_OFF",
    "FlowEulerSteps",
    "flow_euler_sample",
    "SAMPLERS",
    "DPMSolver2Steps",
    "DiffusionTables",
    "DiscreteVPSchedule",
    "GuidedDenoiser",
    "SamplerSpec",
    "SpacedDiffusion",
    "check_sampler",
    "ddim_sample",
    "ddpm_sample",
    "dpm_solver2_sample",
    "dpm_solver_fast_sample",
    "initial_noise",
    "sample_generators",
    "sample_seed",
    "SEED_STRIDE",
    "space_timesteps",
]
