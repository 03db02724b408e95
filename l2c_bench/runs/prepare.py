"""Prepare one run: check every setting before compute, load the model, let the method make
what it needs (a learned router, a calibration), and plan once."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from omegaconf import DictConfig

from .. import generate
from ..caching import CACHE_METHODS, CacheMethod, FixedPlan, make_cache
from ..models.layers import AUTOCAST_DTYPES, cast_weights_
from ..models.loading import (
    RunConfigError,
    build_configured,
    load_model,
    model_fingerprint,
    pipeline_vae_folder,
    prompt_set,
)
from ..sampling import CONVENTIONS, check_sampler
from ..sampling.graphs import RUNTIME_DECISIONS, SamplingGraphs, check_graphable
from ..sampling.noise import MAX_RUN_SEED, SEED_STRIDE
from ..system.devices import init_distributed, retain_cpu_heap, set_tf32
from .converged import check_converged
from .shards import Shard, from_environment, sample_range


def build_cache(cfg: DictConfig) -> CacheMethod | None:
    """The configured cache method with only its own parameters (None for `none`)."""
    if cfg.cache.name not in CACHE_METHODS:
        raise RunConfigError(f"cache.name={cfg.cache.name!r} is unknown; valid: {', '.join(CACHE_METHODS)}")
    if cfg.cache.name == "none":
        return None
    params = {f.name: cfg.cache[f.name] for f in fields(CACHE_METHODS[cfg.cache.name]) if f.name in cfg.cache}
    return make_cache(cfg.cache.name, **params)


@dataclass
class RunSpec:
    """What a method's run hooks (`CacheMethod.check_run`, `.prepare`) read: the run's config and
    sampler, and once loaded its device, model and VAE."""

    cfg: DictConfig
    sampler: str
    device: torch.device | None = None
    model: torch.nn.Module | None = None
    vae: torch.nn.Module | None = None

    @property
    def nfe(self) -> int:
        return int(self.cfg.steps)

    @property
    def family(self) -> str:
        return str(self.cfg.model.family)


def validate(cfg: DictConfig) -> tuple[str, CacheMethod | None]:
    """Check every value that can be checked without compute; return sampler name and cache
    (None for `none`; a method that makes something on the loaded model, such as a router to be
    learned, is planned only after its `prepare`)."""
    sampler = cfg.sampler.name or cfg.model.default_sampler
    if cfg.model.family not in CONVENTIONS:
        raise RunConfigError(f"model.family={cfg.model.family!r} is unknown; valid: {', '.join(CONVENTIONS)}")
    check_sampler(sampler, cfg.model.family, cfg.steps)
    check_converged(cfg)
    if cfg.model.vae not in ("none", "sd", "pretrained"):
        raise RunConfigError(f"model.vae={cfg.model.vae!r} is unknown; valid: none, sd, pretrained")
    if cfg.model.vae == "pretrained" and not cfg.model.diffusers_class:
        raise RunConfigError("model.vae=pretrained reads a diffusers folder's vae/: it is for model=diffusers")
    if cfg.model.vae == "pretrained":
        pipeline_vae_folder(cfg)  # the folder is there: before any compute
    if cfg.model.get("prompt_set"):
        prompt_set(cfg.model)  # a model that takes prompts and a file that reads: before any compute
    check_text_metrics(cfg)
    check_lpips(cfg)
    if not 0 <= cfg.seed <= MAX_RUN_SEED:  # each seed owns a disjoint block of sample seeds (sampling.noise)
        raise RunConfigError(f"seed must be in [0, {MAX_RUN_SEED}] (each seed owns {SEED_STRIDE} sample seeds), "
                             f"got {cfg.seed}")
    if cfg.metrics.num_samples > SEED_STRIDE:
        raise RunConfigError(f"metrics.num_samples must be <= {SEED_STRIDE} (one seed's block of sample seeds), "
                             f"got {cfg.metrics.num_samples}; split larger sets across seeds")
    for key in ("num_samples", "batch_size", "timing_batch", "timing_repeats"):
        if cfg.metrics[key] < 1:
            raise RunConfigError(f"metrics.{key} must be >= 1, got {cfg.metrics[key]}")
    if cfg.metrics.interval_resamples < 0:
        raise RunConfigError(f"metrics.interval_resamples must be >= 0 (0 turns intervals off), "
                             f"got {cfg.metrics.interval_resamples}")
    if cfg.metrics.interval_resamples and cfg.metrics.interval_groups < 2:
        raise RunConfigError(f"metrics.interval_groups must be >= 2 (jackknife groups), got {cfg.metrics.interval_groups}")
    if cfg.metrics.fid and cfg.metrics.num_samples < 2:
        raise RunConfigError("metrics.fid needs metrics.num_samples >= 2")
    if cfg.metrics.fid and cfg.metrics.reference and cfg.scale.name != "toy" and cfg.model.checkpoint != "random":
        from ..metrics.features import locate_reference

        locate_reference(cfg.metrics.reference, cfg.scale.features, cfg.metrics.fid_mode)  # before any sampling
    if cfg.dtype not in AUTOCAST_DTYPES:
        raise RunConfigError(f"dtype={cfg.dtype!r} is unknown; valid: {', '.join(AUTOCAST_DTYPES)}")
    cache = build_cache(cfg)  # the method's own parameters are checked when it is built
    if cache is not None:
        cache = cache.check_run(RunSpec(cfg, sampler))  # e.g. L2C: its cycle, recipe and stored router
        if cache.plans_without_weights:
            # plan on a weightless copy: router shapes etc. fail before any compute
            cache.plan(model=build_configured(cfg.model, device="meta"), sampler=sampler, nfe=cfg.steps)
    return sampler, cache


def check_text_metrics(cfg: DictConfig) -> None:
    """metrics.clip_model needs a local CLIP, texts (model.prompt_set) and images (a VAE)."""
    if not cfg.metrics.get("clip_model"):
        return
    from ..metrics.clip import ClipModelMissing, check_clip_folder

    try:
        check_clip_folder(cfg.metrics.clip_model)
    except ClipModelMissing as exc:
        raise RunConfigError(str(exc)) from None
    if not cfg.model.get("prompt_set"):
        raise RunConfigError("metrics.clip_model scores images against their prompts: set model.prompt_set (`toy` or "
                             "a file of prompts) on a text-to-image model=diffusers class")
    if cfg.model.vae == "none":
        raise RunConfigError("metrics.clip_model scores images: these latents need a VAE (model.vae=pretrained)")


def check_lpips(cfg: DictConfig) -> None:
    """metrics.lpips_backbone: a local file of the LPIPS backbone's weights (never downloaded) and a
    network LPIPS has linear heads for."""
    from pathlib import Path

    from ..metrics.perceptual import LPIPS_NETS

    backbone = cfg.metrics.get("lpips_backbone")
    if not backbone:
        return
    if cfg.metrics.lpips_net not in LPIPS_NETS:
        raise RunConfigError(f"metrics.lpips_net={cfg.metrics.lpips_net!r} is unknown; valid: {', '.join(LPIPS_NETS)}")
    if not Path(backbone).is_file():
        raise RunConfigError(f"metrics.lpips_backbone={backbone!r} is not a file: LPIPS needs its backbone's weights "
                             f"as a local file (torchvision's state dict of {cfg.metrics.lpips_net}, e.g. "
                             "alexnet-owt-7be5be79.pth); they are never downloaded. Unset it to skip LPIPS")


@dataclass
class Point:
    """One benchmark point, ready to sample: model, planned cache, sampler settings, shard."""

    cfg: DictConfig
    sampler: str
    device: torch.device
    model: torch.nn.Module
    vae: torch.nn.Module | None
    cache: CacheMethod | None
    shard: Shard
    artifacts: dict  # the learned router or calibration file the method uses, for the row
    features: object | None = None  # the feature network (metrics.features); None: no quality metrics
    model_sha256: str | None = None  # the weights' content hash (None: random weights)
    graphs: SamplingGraphs | None = None  # cuda_graph=true: the captured sampling loops
    branch_change: list | None = None  # metrics.layer_error: (nfe, blocks, 2), measured in prepare()
    clip: object | None = None  # metrics.clip_model: the CLIP scorer (metrics/clip.py)
    lpips: object | None = None  # metrics.lpips_backbone: LPIPS from local weights (metrics/perceptual.py)

    def sample(self, cache=None, **kwargs):
        """`generate` under the configured numerics (autocast for bf16/fp16, CUDA graphs)."""
        dtype = AUTOCAST_DTYPES[self.cfg.dtype]
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return generate(self.model, cache=cache, graphs=self.graphs, **kwargs)

    @property
    def common(self) -> dict:
        cfg = self.cfg
        return dict(steps=cfg.steps, sampler=self.sampler, guidance_scale=cfg.model.guidance_scale,
                    guidance_channels=cfg.model.guidance_channels, eta=cfg.sampler.eta, vae=self.vae)


def prepare(cfg: DictConfig) -> Point:
    """Validate, resolve the shard, load the model, learn/find the router, plan once."""
    sampler, cache = validate(cfg)
    shard = from_environment(cfg.shard.index, cfg.shard.count)
    sample_range(cfg.metrics.num_samples, cfg.metrics.batch_size, shard)  # an impossible split fails here
    device = init_distributed(cfg.device)  # torchrun: this rank's GPU
    set_tf32(device, bool(cfg.tf32))
    if cfg.cuda_graph:  # method, device and sampler now, before loading, router learning or calibration
        if getattr(CACHE_METHODS.get(cfg.cache.name), "decides_at_run_time", False):  # TeaCache would calibrate first
            raise RunConfigError(RUNTIME_DECISIONS)
        _check_graphable(cfg, sampler, device, None)
    if device.type == "cpu":
        retain_cpu_heap()  # a cache's regrowing heap would otherwise page-fault (system/devices.py)
    model, vae = load_model(cfg, device)
    if cfg.compile:
        from ..models.layers import compile_branches

        compile_branches(model)  # compiled on the first batch, before anything is timed
    artifacts = {}
    if cache is not None:  # what the method makes or finds on the loaded model (router, calibration)
        cache, artifacts = cache.prepare(RunSpec(cfg, sampler, device, model, vae))
    if cache is not None:  # plan once (router read, calibration): never inside a timed call
        cache = FixedPlan.of(cache, model=model, sampler=sampler, nfe=cfg.steps)
    change = None
    if cfg.metrics.layer_error:  # paper Fig. 3: mean ||f(h_n) - f(h_n-1)||^2 per evaluation, block, branch
        from ..caching.methods.heuristic import branch_change

        change = branch_change(model, sampler, cfg.steps).tolist()  # float32, as it always was
    # Weights stored in autocast's dtype once: its values, without recasting every weight at every
    # call. Only after everything that runs the model in float32 (router learning, TeaCache's
    # calibration, the greedy heuristic's measurement inside the planning above, layer_error).
    if (dtype := AUTOCAST_DTYPES[cfg.dtype]) is not None:
        cast_weights_(model, dtype)
    graphs = None
    if cfg.cuda_graph:  # a run-time policy shows in the plan
        _check_graphable(cfg, sampler, device, cache.checked_plan(model=model, sampler=sampler, nfe=cfg.steps)
                         if cache is not None else None)
        graphs = SamplingGraphs()
    features = None
    model_sha256 = model_fingerprint(cfg)  # None: random weights, no shared reference
    # quality metrics need trained weights and images: latents without a VAE (the toy text-to-image
    # classes) have only the paired fidelity to their uncached samples
    if model_sha256 is not None and (vae is not None or model.in_channels == 3):
        from ..metrics.features import feature_net

        features = feature_net(cfg.scale.features, device, cfg.metrics.fid_mode)  # no Inception file: error here
    clip = None
    if cfg.metrics.get("clip_model"):  # checked in validate(): a local CLIP, a prompt set, a VAE
        from ..metrics.clip import ClipScorer

        clip = ClipScorer(cfg.metrics.clip_model, device)
    lpips = None
    if cfg.metrics.get("lpips_backbone") and features is not None:  # images to score; checked in validate()
        from ..metrics.perceptual import Lpips

        lpips = Lpips.from_files(cfg.metrics.lpips_backbone, net=cfg.metrics.lpips_net, device=device)
    return Point(cfg, sampler, device, model, vae, cache, shard, artifacts, features, model_sha256, graphs, change,
                 clip, lpips)


def _check_graphable(cfg: DictConfig, sampler: str, device: torch.device, plan) -> None:
    try:
        check_graphable(sampler, cfg.sampler.eta, plan, device)
    except ValueError as error:
        raise RunConfigError(str(error)) from None

