"""Prepare one run: check every setting before compute, load the model, let the method make
what it needs (a learned router, a calibration), and plan once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import torch
from omegaconf import DictConfig, OmegaConf

from .. import generate
from ..caching import CACHE_METHODS, CacheMethod, FixedPlan, make_cache
from ..description import Loaded, MetricsSpec, RunDescription, describe_config
from ..engine.model import latent_shape
from ..metrics.converged import check_converged
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
from .shards import Shard, from_environment, sample_range


def describe(cfg: DictConfig) -> RunDescription:
    """The run's typed, frozen description (l2c_bench.description): the one reading of the composed
    config; everything past this module is given the description."""
    if cfg.cache.name not in CACHE_METHODS:
        raise RunConfigError(f"cache.name={cfg.cache.name!r} is unknown; valid: {', '.join(CACHE_METHODS)}")
    config = OmegaConf.to_container(cfg, resolve=True)
    return describe_config(config, sampler=config["sampler"]["name"] or config["model"]["default_sampler"],
                           cache=build_cache(config["cache"]))


def build_cache(params: Mapping) -> CacheMethod | None:
    """The method a `cache` node configures, given only its own parameters (None for `none`)."""
    if params["name"] == "none":
        return None
    method = CACHE_METHODS[params["name"]]
    return make_cache(params["name"], **{f.name: params[f.name] for f in fields(method) if f.name in params})


def validate(cfg: DictConfig) -> tuple[RunDescription, CacheMethod | None]:
    """Check every value that can be checked without compute; return the run's description and the
    cache to prepare (None for `none`; a method that makes something on the loaded model, such as a
    router to be learned, is planned only after its `prepare`)."""
    run = describe(cfg)
    model, sampler = run.model, run.sampler.name
    if model.family not in CONVENTIONS:
        raise RunConfigError(f"model.family={model.family!r} is unknown; valid: {', '.join(CONVENTIONS)}")
    check_sampler(sampler, model.family, run.steps)
    check_converged(run)
    if model.vae not in ("none", "sd", "pretrained"):
        raise RunConfigError(f"model.vae={model.vae!r} is unknown; valid: none, sd, pretrained")
    if model.vae == "pretrained" and not model.diffusers_class:
        raise RunConfigError("model.vae=pretrained reads a diffusers folder's vae/: it is for model=diffusers")
    if model.vae == "pretrained":
        pipeline_vae_folder(model)  # the folder is there: before any compute
    if model.prompt_set:
        prompt_set(model)  # a model that takes prompts and a file that reads: before any compute
    check_text_metrics(run)
    check_lpips(run.metrics)
    check_metrics(run)
    if run.dtype not in AUTOCAST_DTYPES:
        raise RunConfigError(f"dtype={run.dtype!r} is unknown; valid: {', '.join(AUTOCAST_DTYPES)}")
    cache = run.cache  # its own parameters were checked when it was built
    if cache is not None:
        cache = cache.check_run(run)  # e.g. L2C: its cycle, recipe and stored router
        if cache.plans_without_weights:
            # plan on a weightless copy: router shapes etc. fail before any compute
            cache.plan(model=build_configured(model, device="meta"), sampler=sampler, nfe=run.steps)
    return run, cache


def check_metrics(run: RunDescription) -> None:
    """Seeds, sample counts, batch sizes, interval settings and the FID reference."""
    m = run.metrics
    if not 0 <= run.seed <= MAX_RUN_SEED:  # each seed owns a disjoint block of sample seeds (sampling.noise)
        raise RunConfigError(f"seed must be in [0, {MAX_RUN_SEED}] (each seed owns {SEED_STRIDE} sample seeds), "
                             f"got {run.seed}")
    if m.num_samples > SEED_STRIDE:
        raise RunConfigError(f"metrics.num_samples must be <= {SEED_STRIDE} (one seed's block of sample seeds), "
                             f"got {m.num_samples}; split larger sets across seeds")
    for key in ("num_samples", "batch_size", "timing_batch", "timing_repeats", "timing_min_repeats"):
        if getattr(m, key) < 1:
            raise RunConfigError(f"metrics.{key} must be >= 1, got {getattr(m, key)}")
    if not 0 <= m.timing_halfwidth < 1:
        raise RunConfigError(f"metrics.timing_halfwidth is a fraction of the speedup in [0, 1) (0.05 = +-5%; "
                             f"0 = always metrics.timing_repeats), got {m.timing_halfwidth}")
    if m.interval_resamples < 0:
        raise RunConfigError(f"metrics.interval_resamples must be >= 0 (0 turns intervals off), "
                             f"got {m.interval_resamples}")
    if m.interval_resamples and m.interval_groups < 2:
        raise RunConfigError(f"metrics.interval_groups must be >= 2 (jackknife groups), got {m.interval_groups}")
    if m.fid and m.num_samples < 2:
        raise RunConfigError("metrics.fid needs metrics.num_samples >= 2")
    if m.fid and m.reference and run.scale.name != "toy" and run.model.checkpoint != "random":
        from ..metrics.features import locate_reference

        locate_reference(m.reference, run.scale.features, m.fid_mode)  # before any sampling


def check_text_metrics(run: RunDescription) -> None:
    """metrics.clip_model needs a local CLIP, texts (model.prompt_set) and images (a VAE)."""
    if not run.metrics.clip_model:
        return
    from ..metrics.clip import ClipModelMissing, check_clip_folder

    try:
        check_clip_folder(run.metrics.clip_model)
    except ClipModelMissing as exc:
        raise RunConfigError(str(exc)) from None
    if not run.model.prompt_set:
        raise RunConfigError("metrics.clip_model scores images against their prompts: set model.prompt_set (`toy` or "
                             "a file of prompts) on a text-to-image model=diffusers class")
    if run.model.vae == "none":
        raise RunConfigError("metrics.clip_model scores images: these latents need a VAE (model.vae=pretrained)")


def check_lpips(metrics: MetricsSpec) -> None:
    """metrics.lpips_backbone: a local file of the LPIPS backbone's weights (never downloaded) and a
    network LPIPS has linear heads for."""
    from pathlib import Path

    from ..metrics.perceptual import LPIPS_NETS

    backbone = metrics.lpips_backbone
    if not backbone:
        return
    if metrics.lpips_net not in LPIPS_NETS:
        raise RunConfigError(f"metrics.lpips_net={metrics.lpips_net!r} is unknown; valid: {', '.join(LPIPS_NETS)}")
    if not Path(backbone).is_file():
        raise RunConfigError(f"metrics.lpips_backbone={backbone!r} is not a file: LPIPS needs its backbone's weights "
                             f"as a local file (torchvision's state dict of {metrics.lpips_net}, e.g. "
                             "alexnet-owt-7be5be79.pth); they are never downloaded. Unset it to skip LPIPS")


@dataclass(frozen=True, kw_only=True)
class Point:
    """One benchmark point, ready to sample: its description, the loaded model, the planned cache, its shard."""

    run: RunDescription
    device: torch.device
    model: torch.nn.Module
    vae: torch.nn.Module | None
    cache: CacheMethod | None
    shard: Shard
    artifacts: dict  # the learned router or calibration file the method uses, for the row
    features: object | None = None  # the feature network (metrics.features); None: no quality metrics
    model_sha256: str | None = None  # the weights' content hash (None: random weights)
    images: bool = False  # trained weights whose samples are images or frames: scored against the converged reference
    graphs: SamplingGraphs | None = None  # cuda_graph=true: the captured sampling loops
    branch_change: list | None = None  # metrics.layer_error: (nfe, blocks, 2), measured in prepare()
    clip: object | None = None  # metrics.clip_model: the CLIP scorer (metrics/clip.py)
    lpips: object | None = None  # metrics.lpips_backbone: LPIPS from local weights (metrics/perceptual.py)

    @property
    def sampler(self) -> str:
        return self.run.sampler.name

    def sample(self, cache=None, **kwargs):
        """`generate` under the configured numerics (autocast for bf16/fp16, CUDA graphs)."""
        dtype = AUTOCAST_DTYPES[self.run.dtype]
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return generate(self.model, cache=cache, graphs=self.graphs, **kwargs)

    @property
    def common(self) -> dict:
        run = self.run
        return dict(steps=run.steps, sampler=self.sampler, guidance_scale=run.model.guidance_scale,
                    guidance_channels=run.model.guidance_channels, eta=run.sampler.eta, vae=self.vae)


def prepare(cfg: DictConfig) -> Point:
    """Validate, resolve the shard, load the model, learn/find the router, plan once."""
    run, cache = validate(cfg)
    shard = from_environment(run.shard.index, run.shard.count)
    sample_range(run.metrics.num_samples, run.metrics.batch_size, shard)  # an impossible split fails here
    device = init_distributed(run.device)  # torchrun: this rank's GPU
    set_tf32(device, bool(run.tf32))
    if run.cuda_graph:  # method, device and sampler now, before loading, router learning or calibration
        if run.cache is not None and run.cache.decides_at_run_time:  # TeaCache would calibrate first
            raise RunConfigError(RUNTIME_DECISIONS)
        _check_graphable(run, device, None)
    if device.type == "cpu":
        retain_cpu_heap()  # a cache's regrowing heap would otherwise page-fault (system/devices.py)
    model, vae = load_model(run.model, device)
    if run.compile:
        from ..models.layers import compile_branches

        compile_branches(model)  # compiled on the first batch, before anything is timed
    artifacts = {}
    if cache is not None:  # what the method makes or finds on the loaded model (router, calibration)
        cache, artifacts = cache.prepare(run, Loaded(device=device, model=model, vae=vae))
        # planned once (router read, calibration): never inside a timed call
        cache = FixedPlan.of(cache, model=model, sampler=run.sampler.name, nfe=run.steps)
    change = None
    if run.metrics.layer_error:  # paper Fig. 3: mean ||f(h_n) - f(h_n-1)||^2 per evaluation, block, branch
        from ..caching.methods.heuristic import branch_change

        change = branch_change(model, run.sampler.name, run.steps).tolist()  # measured in float32
    # Weights stored in autocast's dtype once: its values, without recasting every weight at every
    # call. Only after everything that runs the model in float32 (router learning, TeaCache's
    # calibration, the greedy heuristic's measurement inside the planning above, layer_error).
    if (dtype := AUTOCAST_DTYPES[run.dtype]) is not None:
        cast_weights_(model, dtype)
    graphs = None
    if run.cuda_graph:  # a run-time policy shows in the plan
        _check_graphable(run, device, cache.checked_plan(model=model, sampler=run.sampler.name, nfe=run.steps)
                         if cache is not None else None)
        graphs = SamplingGraphs()
    model_sha256 = model_fingerprint(run.model)  # None: random weights, no shared reference
    images = model_sha256 is not None and (vae is not None or model.in_channels == 3)
    video = len(latent_shape(model)) == 4  # (C, F, H, W)
    return Point(run=run, device=device, model=model, vae=vae, cache=cache, shard=shard, artifacts=artifacts,
                 model_sha256=model_sha256, images=images, graphs=graphs, branch_change=change,
                 **metric_networks(run, device, images=images, video=video))


def metric_networks(run: RunDescription, device: torch.device, *, images: bool, video: bool = False) -> dict:
    """The networks the wanted metrics score with, each None where not wanted: `features` (quality
    metrics need trained weights and images; latents without a VAE, as the toy text-to-image
    classes give, have only the paired fidelity to their uncached samples; a video model's set
    metrics would need a video network: none, metrics/video.py's note says so), `clip` and `lpips`."""
    out: dict = {"features": None, "clip": None, "lpips": None}
    if images and not video:
        from ..metrics.features import feature_net

        out["features"] = feature_net(run.scale.features, device, run.metrics.fid_mode)  # no Inception file: error
    if run.metrics.clip_model:  # checked in validate(): a local CLIP, a prompt set, a VAE
        from ..metrics.clip import ClipScorer

        out["clip"] = ClipScorer(run.metrics.clip_model, device)
    if run.metrics.lpips_backbone and images:  # checked in validate()
        from ..metrics.perceptual import Lpips

        out["lpips"] = Lpips.from_files(run.metrics.lpips_backbone, net=run.metrics.lpips_net, device=device)
    return out


def _check_graphable(run: RunDescription, device: torch.device, plan) -> None:
    try:
        check_graphable(run.sampler.name, run.sampler.eta, plan, device)
    except ValueError as error:
        raise RunConfigError(str(error)) from None
