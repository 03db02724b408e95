"""`generate`: the one sampling entry point used by notebooks, tests, the run steps and the benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from .engine.model import latent_shape
from .sampling import CONVENTIONS, GuidedDenoiser, check_sampler, initial_noise, sample_generators
from .sampling.graphs import SamplingGraphs, check_graphable, numerics_key, plan_key


@dataclass
class GenerationResult:
    latents: torch.Tensor  # (N, C, H, W) final sampler state (latents, or pixels for pixel models); video (N, C, F, H, W)
    labels: torch.Tensor  # (N,)
    seeds: list[int]
    nfe: int
    sampler: str
    guidance_scale: float
    guidance_convention: str
    images: torch.Tensor | None = None  # (N, 3, H', W') in [-1, 1] when decode=True; video (N, 3, F', H', W')
    plan: object | None = None  # the caching plan that ran (None: no cache)
    # dynamic methods (fbcache, teacache): per batch, its size, the compute mask it realised, the
    # span decision and the policy's indicator at each evaluation
    realised: list[dict] | None = None

    @property
    def dynamic(self) -> bool:
        return self.plan is not None and self.plan.decided_at_run_time

    @property
    def schedule(self) -> torch.Tensor | None:
        """The compute mask (nfe, blocks, 2) that ran; None without a cache. Dynamic methods with
        several batches: the share of samples whose batch computed each branch (float)."""
        if self.plan is None:
            return None
        if not self.dynamic:
            return self.plan.schedule()
        if len(self.realised) == 1:
            return self.realised[0]["schedule"]
        total = sum(r["size"] for r in self.realised)
        return sum(r["schedule"].double() * r["size"] for r in self.realised) / total

    @property
    def cached_ratio(self) -> float:
        """Reused / all branch evaluations in the method's cache steps (paper Table 4); 0 uncached."""
        if self.plan is None:
            return 0.0
        if not self.dynamic:
            return self.plan.cached_ratio
        from .engine.core import realised_ratios

        return realised_ratios(self.plan, self.schedule)[0]


class NonFiniteSamples(RuntimeError):
    """Sampling produced NaN or Inf latents: the run fails before any metric is computed."""


def _numerics(model: nn.Module, device: torch.device) -> str:
    """'float32 weights' / 'bfloat16 autocast over float32 weights': what the evaluations ran in."""
    weights = str(next(model.parameters()).dtype).removeprefix("torch.")
    if torch.is_autocast_enabled(device.type):
        return f"{str(torch.get_autocast_dtype(device.type)).removeprefix('torch.')} autocast over {weights} weights"
    return f"{weights} weights"


def _first_non_finite_evaluation(sample_batch, x_T: torch.Tensor, batch_labels, seeds) -> int | None:
    """Rerun a batch that ended non-finite, checking every evaluation's output (one host sync
    each: only on this failure path); the 1-based evaluation where NaN/Inf first appeared."""
    class Found(Exception):
        pass

    count = 0

    def check(out: torch.Tensor) -> None:
        nonlocal count
        count += 1
        if not torch.isfinite(out).all():
            raise Found

    try:
        sample_batch(x_T, batch_labels, sample_generators(seeds), check)
    except Found:
        return count
    return None  # finite on the rerun: the first run's fault was not deterministic


def to_images(samples: torch.Tensor, vae: nn.Module | None) -> torch.Tensor:
    """Decode latents with the VAE, or treat a pixel model's output as the image; clamp to [-1, 1]."""
    if vae is not None:
        from .models.vae import decode_latents

        samples = decode_latents(vae, samples)
    return samples.clamp(-1, 1)


@torch.no_grad()
def generate(model: nn.Module, *, labels: Sequence[int] | torch.Tensor, seeds: Sequence[int],
             steps: int, sampler: str, guidance_scale: float, cache=None, decode: bool = False,
             vae: nn.Module | None = None, batch_size: int | None = None, eta: float = 0.0,
             guidance_channels: int | None = None, progress: bool = False,
             graphs: SamplingGraphs | None = None) -> GenerationResult:
    """Sample one image per (seed, label) pair with `steps` NFE.

    guidance_scale is in the model family's convention (DiT, flow: w, 1 = off; U-ViT: s, 0 = off);
    `guidance_channels` None: the model's own (`model.guidance_channels`; DiT: the first 3).
    Sample i starts from randn(shape, generator=Generator().manual_seed(seeds[i])), shape the model's
    latent shape ((C, H, W); video (C, F, H, W): `engine.model.latent_shape`), so
    results do not depend on batch_size. `cache` is what `l2c_bench.caching.make_cache` returns.
    `graphs` (CUDA): replay each batch's whole loop as a CUDA graph, captured on first use
    (see `l2c_bench.sampling.graphs` for what can be captured).
    """
    seeds = [int(s) for s in seeds]
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    if len(labels) != len(seeds):
        raise ValueError(f"got {len(labels)} labels for {len(seeds)} seeds: give one label per seed")
    if len(seeds) == 0:
        raise ValueError("seeds is empty: nothing to generate")
    if labels.min() < 0 or labels.max() > model.null_class:
        raise ValueError(f"labels must lie in [0, {model.num_classes}] ({model.null_class} = null class)")
    spec = check_sampler(sampler, model.family, steps)  # the registry's entry (sampling.SAMPLERS)
    device = next(model.parameters()).device
    shape = latent_shape(model)
    batch_size = batch_size or len(seeds)
    plan = cache.checked_plan(model=model, sampler=sampler, nfe=steps) if cache is not None else None
    if graphs is not None:
        check_graphable(sampler, eta, plan, device)
    prepared = spec.prepare(steps, device, model)  # once per call, outside every batch's loop
    if guidance_channels is None:
        guidance_channels = getattr(model, "guidance_channels", 3)
    out, realised = [], []

    def sample_batch(x: torch.Tensor, batch_labels: torch.Tensor, generators, check=None) -> torch.Tensor:
        run_cache = cache.run(plan) if cache is not None else None  # empty caches for every batch
        denoise = GuidedDenoiser(model, batch_labels, guidance_scale, guidance_channels, run_cache)
        if check is not None:  # the non-finite search: every evaluation's output checked
            guided = denoise

            def denoise(x, t):
                out = guided(x, t)
                check(out)
                return out
        x = spec.run(denoise, x, steps, generators, eta, progress and graphs is None, prepared)
        if run_cache is not None:
            schedule = run_cache.schedule  # raises if the sampler did not follow the plan
            if plan.decided_at_run_time:
                realised.append({"size": len(x), "schedule": schedule, "decisions": run_cache.decisions,
                                 "indicators": run_cache.indicators})
        return x

    graph_key = (id(model), sampler, steps, float(guidance_scale), guidance_channels, plan_key(plan),
                 numerics_key(device)) if graphs is not None else None
    batches = range(0, len(seeds), batch_size)
    for start in tqdm(batches, disable=not progress or len(batches) == 1, desc="batches", leave=False):
        batch_seeds = seeds[start : start + batch_size]
        generators = sample_generators(batch_seeds)
        x = initial_noise(generators, shape, device)
        batch_labels = labels[start : start + batch_size].to(device)
        if graphs is None:
            x = sample_batch(x, batch_labels, generators)
        else:  # deterministic loops only (check_graphable): the generators are not used
            x = graphs.run(graph_key, lambda x_T, y: sample_batch(x_T, y, None), x, batch_labels)
        if not torch.isfinite(x).all():  # one host sync per batch; metrics never see NaN/Inf
            at = _first_non_finite_evaluation(sample_batch, initial_noise(sample_generators(batch_seeds), shape, device),
                                              batch_labels, batch_seeds)
            method = getattr(cache, "name", type(cache).__name__) if cache is not None else "none"
            method = "uncached" if method == "none" else f"cache={method}"
            where = f"at evaluation {at} of {steps}" if at else f"by the end of the batch ({steps} evaluations)"
            raise NonFiniteSamples(
                f"non-finite latents {where} ({sampler}, {method}, {_numerics(model, device)}; samples "
                f"{start}..{start + len(batch_seeds) - 1}, guidance_scale={guidance_scale:g}): no metric is "
                "computed from them; check model.guidance_scale, the dtype and the checkpoint")
        out.append(x[:, : model.in_channels])
    latents = torch.cat(out)
    return GenerationResult(
        latents=latents, labels=labels, seeds=seeds, nfe=steps, sampler=sampler,
        guidance_scale=float(guidance_scale), guidance_convention=CONVENTIONS[model.family],
        images=to_images(latents, vae) if decode else None, plan=plan, realised=realised or None,
    )
