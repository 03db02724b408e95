"""Samplers by name. `steps` always means NFE (model evaluations per sample, per guidance pass)."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class SamplerSpec:
    family: str  # the model family whose training schedule and time convention it uses
    stochastic: bool
    description: str


SAMPLERS = {
    "ddim": SamplerSpec("dit", False, "DDIM over DiT's respaced linear schedule (eta 0 by default)"),
    "ddpm": SamplerSpec("dit", True, "ancestral DDPM with learned variance (DiT's p_sample_loop)"),
    "dpm_solver2": SamplerSpec("uvit", False, "singlestep DPM-Solver-2, t-uniform, data prediction"),
    "dpm_solver_fast": SamplerSpec("uvit", False, "U-ViT's default 'fast' DPM-Solver (orders 3..3,2)"),
    "flow_euler": SamplerSpec("flow", False, "Euler over the rectified-flow ODE (diffusers' shifted flow-match schedule)"),
}

# each family's ODE sampler: its default, and what the converged reference and router data use
DEFAULT_SAMPLERS = {"dit": "ddim", "uvit": "dpm_solver2", "flow": "flow_euler"}


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
