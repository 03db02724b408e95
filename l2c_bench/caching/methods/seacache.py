"""`seacache`: SeaCache (CVPR 2026, "SeaCache: Spectral-Evolution-Aware Cache for Accelerating
Diffusion Models", arXiv 2602.18993): TeaCache's accumulate-and-reuse rule on a spectrally filtered
indicator, with no calibration. Block 0's modulated input, laid out on its token grid, is passed
through the SEA filter -- per frequency f the Wiener gain (1 - sigma) P / ((1 - sigma)^2 P +
sigma^2), P = 1 / |f|^power the clean signal's power prior, sigma the evaluation's flow noise
level, the gain normalised to mean 1 -- so the high frequencies the noise still dominates count
little early in sampling and fully late. The relative L1 change of the filtered indicator to the
previous evaluation's is accumulated; while the sum stays below `threshold` the whole block stack
adds its cached residual update, otherwise it runs and the sum resets. The first `warmup`
evaluations and the last one compute.

The rule is the authors' (jiwoogit/SeaCache, Wan2.1/seacache_generate.py, `seacache_forward`:
`apply_sea_with_scheduler(..., mode="flow", power_exp=3.0, norm_mode="mean")` on the modulated
input reshaped to (N, F, H, W, D), `ret_steps` 1, `cutoff_steps` the last step, threshold 0.2).
The filter's formula is the one diffusers ships as the authors' Eq. (7) (`hooks/sea_cache.py`,
`_apply_sea_filter`), since the authors' `util_seacache.py` is not in their published tree.

What differs, and why: the authors store the *unfiltered* indicator at retention steps and
compare the first filtered one against it; we filter at every evaluation (as diffusers does), so
every comparison is between like quantities. VP samplers (DDIM, DPM-Solver-2) have no flow sigma:
sigma = s / (alpha + s) puts their state on the flow scale (`noise_levels`), which leaves the
mean-normalised gain unchanged. The first guidance pass decides for every pass (as `teacache`).

Decided at run time: see `dynamic` (one host sync per evaluation)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...engine import CacheConfigError, CacheMethod, Plan
from ...engine.model import latent_shape
from .dynamic import check_threshold, dynamic_plan, relative_l1
from .noise_levels import flow_sigmas

DEFAULT_THRESHOLD = 0.2  # the authors' Wan 2.1 default (`--seacache_thresh`)


def sea_gain(shape: tuple[int, ...], sigma: float, power: float, device=None) -> torch.Tensor:
    """The SEA filter's gain over a frequency grid `shape` (e.g. (F, H, W)), float32, mean 1."""
    sigma = min(max(sigma, 1e-6), 1.0 - 1e-6)
    signal, noise = 1.0 - sigma, sigma
    gain = torch.ones((), device=device)
    for axis, size in enumerate(shape):
        prior = 1.0 / (torch.fft.fftfreq(size, device=device).abs().pow(power) + 1e-16)  # (size,) clean power
        axis_gain = signal * prior / (signal**2 * prior + noise**2 + 1e-16)
        view = [1] * len(shape)
        view[axis] = size
        gain = gain * axis_gain.reshape(view)
    mean = gain.mean()
    return gain / mean if torch.isfinite(mean) and mean > 0 else gain


def sea_filter(tokens: torch.Tensor, sigma: float, power: float) -> torch.Tensor:
    """tokens (N, F, H, W, D) -> the same, filtered over the (F, H, W) grid, float32."""
    grid = tokens.shape[1:4]
    spectrum = torch.fft.fftn(tokens.float(), dim=(1, 2, 3))
    gain = sea_gain(grid, sigma, power, tokens.device)[None, ..., None]  # (1, F, H, W, 1)
    return torch.fft.ifftn(spectrum * gain, dim=(1, 2, 3)).real


def token_grid(latent: tuple[int, ...], tokens: int) -> tuple[int, int, int, int]:
    """(leading non-image tokens, F, H, W) of a modulated input with `tokens` tokens, for a latent
    (C, H, W) or (C, F, H, W) patchified by p x p (frames unpatched): the smallest p whose image
    tokens fit (U-ViT's label and time tokens lead its sequence)."""
    frames, height, width = (1, *latent[1:]) if len(latent) == 3 else latent[1:]
    for p in (1, 2, 4, 8, 16):
        image = frames * (height // p) * (width // p)
        if height % p == 0 and width % p == 0 and image <= tokens and tokens - image < image:
            return tokens - image, frames, height // p, width // p
    raise CacheConfigError(f"seacache: {tokens} tokens do not lay out on latent {latent}'s patch grid")


@dataclass
class SeaCachePolicy:
    threshold: float
    sigmas: tuple[float, ...]  # (nfe,) the flow noise level of each evaluation
    latent: tuple[int, ...]  # one sample's latent shape, for the token grid
    power: float = 3.0
    warmup: int = 1

    def start(self) -> dict:
        return {"previous": None, "accumulated": 0.0}

    def indicator(self, modulated: torch.Tensor, n: int) -> torch.Tensor:
        """modulated (N, T, D) -> the SEA-filtered image tokens (N, F, H, W, D)."""
        lead, frames, height, width = token_grid(self.latent, modulated.shape[1])
        grid = modulated[:, lead:].reshape(len(modulated), frames, height, width, modulated.shape[-1])
        return sea_filter(grid, self.sigmas[n], self.power)

    def decide(self, state: dict, probe, allowed: bool, n: int, nfe: int) -> tuple[bool, float | None]:
        filtered = self.indicator(probe("modulated"), n)
        previous, state["previous"] = state["previous"], filtered
        if n < self.warmup or n >= nfe - 1 or previous is None or not allowed:
            state["accumulated"] = 0.0
            return False, None
        change = relative_l1(filtered, previous)
        state["accumulated"] += change
        if state["accumulated"] < self.threshold:
            return True, change
        state["accumulated"] = 0.0
        return False, change


@dataclass
class SeaCache(CacheMethod):
    threshold: float = DEFAULT_THRESHOLD  # the accumulated filtered change allowed before computing
    power: float = 3.0  # the clean-signal power prior's exponent (the authors' power_exp)
    warmup: int = 1  # the first evaluations that always compute (the authors' ret_steps)
    name = "seacache"
    label = "SeaCache"  # in tables and plots (analysis/labels.py)
    summary = "SeaCache: reuse the stack while a spectrally filtered change indicator stays small"
    description = ("SeaCache (CVPR 2026), no calibration: block 0's modulated input on its token grid, "
                   "filtered by the SEA Wiener gain at the evaluation's noise level (power prior "
                   "1/|f|^`power`, mean-normalised); the whole block stack reuses its residual while the "
                   "accumulated relative L1 change of the filtered indicator stays below `threshold`; the "
                   "first `warmup` and the last evaluation compute. Differs from the authors' code: filtered at"
                   " every evaluation (theirs compares against an unfiltered one after warm-up); VP samplers' "
                   "noise level on the flow scale; not dpm_solver_fast (`unsupported`). Dynamic, as fbcache")
    decides_at_run_time = True

    def __post_init__(self):
        check_threshold(self.threshold, DEFAULT_THRESHOLD)
        if not (math.isfinite(float(self.power)) and self.power > 0):
            raise CacheConfigError(f"cache.power={self.power} must be > 0")
        if int(self.warmup) != self.warmup or self.warmup < 1:
            raise CacheConfigError(f"cache.warmup={self.warmup} must be an integer >= 1 (the first evaluation computes)")

    def plan(self, *, model, sampler: str, nfe: int) -> Plan:
        policy = SeaCachePolicy(check_threshold(self.threshold, DEFAULT_THRESHOLD), tuple(flow_sigmas(sampler, nfe, model)),
                                tuple(latent_shape(model)), float(self.power), int(self.warmup))
        return dynamic_plan(nfe, model.num_blocks, (0, model.num_blocks), policy)
