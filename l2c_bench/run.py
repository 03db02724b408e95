"""One benchmark point: build -> sample -> measure -> record.

    python -m l2c_bench.run                                    # toy DiT, DDIM, 20 NFE, L2C (learned router)
    python -m l2c_bench.run cache=none                         # the same point uncached
    python -m l2c_bench.run -m model=dit,uvit steps=10,20,50   # a six-point sweep
    python -m l2c_bench.run --cfg job                          # print the resolved config only

Each run writes `<results_dir>/<run_id>/result.json` (status ok or failed) and `samples.png`,
and mirrors both to W&B (offline by default). A run whose ok row exists is skipped unless
`force=true`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import sys
import threading
import traceback
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from . import generate
from .caching import CACHE_METHODS, CacheMethod, FixedPlan, UnsupportedCombination, make_cache
from .config import register_configs
from .converged import batch_statistics, check_converged, reference_kwargs, row_metrics
from .loading import TOY_ASSETS, RunConfigError, checkpoint_path, file_sha256, load_model  # noqa: F401 (TOY_ASSETS re-exported)
from .metrics.quality import paired_scores, paired_sums
from .models import build_model, fused
from .models.layers import AUTOCAST_DTYPES, cast_weights_, weights_dtype
from .records import flatten, read_row, row_config, run_id_for, write_row
from .records.provenance import collect, now
from .records.store import CorruptRow, check_writable
from .records.tracker import check_tracker, make_tracker
from .sampling import CONVENTIONS, check_sampler
from .sampling.graphs import RUNTIME_DECISIONS, SamplingGraphs, check_graphable
from .shards import (
    Shard,
    from_environment,
    join_parts,
    load_shards,
    missing_shards,
    sample_range,
    save_shard,
    shard_path,
)
from .summary import point_line, write_run_id
from .system.devices import (
    heap_retained,
    init_distributed,
    peak_memory_mb,
    resolve_device,
    retain_cpu_heap,
    set_tf32,
    tf32_enabled,
)
from .system.files import atomic_path, exclusive

log = logging.getLogger("l2c_bench.run")
register_configs()


def build_cache(cfg: DictConfig, router: str | None = None) -> CacheMethod | None:
    """The configured cache method with only its own parameters (None for `none`);
    `router` replaces cache.router (the resolved path of `auto`)."""
    if cfg.cache.name not in CACHE_METHODS:
        raise RunConfigError(f"cache.name={cfg.cache.name!r} is unknown; valid: {', '.join(CACHE_METHODS)}")
    if cfg.cache.name == "none":
        return None
    from dataclasses import fields

    params = {f.name: cfg.cache[f.name] for f in fields(CACHE_METHODS[cfg.cache.name]) if f.name in cfg.cache}
    if router is not None:
        params["router"] = router
    return make_cache(cfg.cache.name, **params)


def uses_router_store(cfg: DictConfig) -> bool:
    return cfg.cache.name == "l2c" and cfg.cache.router == "auto"


def uses_calibration_store(cfg: DictConfig) -> bool:
    return cfg.cache.name == "teacache" and cfg.cache.coefficients == "auto"


def resolve_calibration(cfg: DictConfig, sampler: str, model) -> Path:
    """TeaCache's calibration for this run: stored, or made now at toy scale; at paper scale a
    missing one is an error printing the command that makes it."""
    from .calibrate import find_or_calibrate, name_for
    from .calibration import store_path

    path = store_path(cfg.results_dir, name_for(cfg, sampler))
    if path.is_file() or cfg.scale.name == "toy":
        return find_or_calibrate(cfg, sampler, model=model)
    overrides = " ".join(a for a in (f"scale={cfg.scale.name}", f"model={cfg.model.family}",
                                     f"model.arch={cfg.model.arch}", f"model.checkpoint={cfg.model.checkpoint}",
                                     f"sampler.name={sampler}", f"steps={cfg.steps}",
                                     f"model.guidance_scale={cfg.model.guidance_scale}",
                                     f"results_dir={cfg.results_dir}")
                         + tuple(f"+model.overrides.{k}={v}" for k, v in cfg.model.overrides.items())
                         + ((f"model.vae_checkpoint={cfg.model.vae_checkpoint}",) if cfg.model.vae == "sd" else ()))
    raise RunConfigError(f"cache.coefficients=auto: no TeaCache calibration at {path}. Make it with\n"
                         f"  python -m l2c_bench.calibrate {overrides}\nor give cache.coefficients=<file or list>.")


def validate(cfg: DictConfig) -> tuple[str, CacheMethod | None]:
    """Check every value that can be checked without compute; return sampler name and cache
    (None for `none`, and for an l2c router still to be learned: prepare() builds it then)."""
    sampler = cfg.sampler.name or cfg.model.default_sampler
    if cfg.model.family not in ("dit", "uvit"):
        raise RunConfigError(f"model.family={cfg.model.family!r} is unknown; valid: dit, uvit")
    check_sampler(sampler, cfg.model.family, cfg.steps)
    check_converged(cfg)
    if cfg.model.vae not in ("none", "sd"):
        raise RunConfigError(f"model.vae={cfg.model.vae!r} is unknown; valid: none, sd")
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
        from .metrics.features import locate_reference

        locate_reference(cfg.metrics.reference, cfg.scale.features, cfg.metrics.fid_mode)  # before any sampling
    if cfg.dtype not in AUTOCAST_DTYPES:
        raise RunConfigError(f"dtype={cfg.dtype!r} is unknown; valid: {', '.join(AUTOCAST_DTYPES)}")
    router = None
    if uses_router_store(cfg):
        from .caching.methods.pairing import l2c_cycle
        from .router_learning.job import l2c_interval, recipe_from, resolve_auto

        l2c_cycle(cfg.model.family, sampler, cfg.steps, interval=l2c_interval(cfg))  # unsupported: recorded
        recipe_from(cfg)  # a bad recipe (lam < 0, ...) fails here
        path = resolve_auto(cfg, sampler)
        if path is None:
            build_cache(cfg, "(to be learned)")  # the method's own parameters (threshold) are checked now
            return sampler, None  # learned in prepare(), on the loaded model
        router = str(path)
    if uses_calibration_store(cfg):
        build_cache(cfg)  # the method's own parameters (threshold) are checked now
        return sampler, None  # calibration found or made in prepare(), on the loaded model
    cache = build_cache(cfg, router)
    if cache is not None and cache.plans_without_weights:
        # plan on a weightless copy: router shapes etc. fail before any compute
        cache.plan(model=build_model(cfg.model.arch, device="meta", **cfg.model.overrides),
                   sampler=sampler, nfe=cfg.steps)
    return sampler, cache


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
        from .models.layers import compile_branches

        compile_branches(model)  # compiled on the first batch, before anything is timed
    artifacts = {}
    if uses_router_store(cfg):
        from .router_learning.job import learn

        router_path = learn(cfg, sampler, device=device, model=model, vae=vae)  # a stored one is reused
        cache = build_cache(cfg, str(router_path))
        artifacts = {"router_file": router_path.name}
    if uses_calibration_store(cfg):
        calibration = resolve_calibration(cfg, sampler, model)
        cache = build_cache(cfg)
        cache.coefficients = str(calibration)
        artifacts = {"calibration_file": calibration.name}
    if cache is not None:  # plan once (router read, calibration): never inside a timed call
        cache = FixedPlan.of(cache, model=model, sampler=sampler, nfe=cfg.steps)
    change = None
    if cfg.metrics.layer_error:  # paper Fig. 3: mean ||f(h_n) - f(h_n-1)||^2 per evaluation, block, branch
        from .caching.methods.heuristic import branch_change

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
    features = model_sha256 = None
    if cfg.model.checkpoint != "random":  # random weights: no quality metrics, no shared reference
        from .metrics.features import feature_net

        features = feature_net(cfg.scale.features, device, cfg.metrics.fid_mode)  # no Inception file: error here
        model_sha256 = file_sha256(checkpoint_path(cfg))
    return Point(cfg, sampler, device, model, vae, cache, shard, artifacts, features, model_sha256, graphs, change)


def _check_graphable(cfg: DictConfig, sampler: str, device: torch.device, plan) -> None:
    try:
        check_graphable(sampler, cfg.sampler.eta, plan, device)
    except ValueError as error:
        raise RunConfigError(str(error)) from None


def sample_part(point: Point, indices: range, progress: bool = True) -> dict:
    """Generate samples `indices` batch by batch (global batches, see shards.py) with the method
    and, for a cached run, uncached on the same seeds; keep per-sample statistics (CPU)."""
    cfg, common = point.cfg, point.common
    out: dict[str, list] = {k: [] for k in ("index", "labels", "features", "logits", "reference_logits",
                                            "latent_se", "reference_latent_range", "image_se", "grid", "schedule")}
    size = cfg.metrics.batch_size
    for start in tqdm(range(indices.start, indices.stop, size), disable=not progress, desc="batches", leave=False):
        idx = torch.arange(start, min(start + size, indices.stop))
        kwargs = dict(labels=idx % point.model.num_classes, seeds=[cfg.seed + int(i) for i in idx], decode=True,
                      **common)
        result = point.sample(point.cache, **kwargs)
        images = result.images.float().cpu()
        out["index"].append(idx)
        out["labels"].append(result.labels.cpu())
        if result.dynamic:  # what each sample's batch computed: (n, nfe, blocks, 2) bool
            out["schedule"].append(result.schedule.cpu().unsqueeze(0).expand(len(idx), -1, -1, -1))
        out["grid"].append(images[idx < cfg.metrics.grid_samples])
        if point.features is not None:
            feats, logits = point.features.embed(images)
            out["features"].append(torch.from_numpy(feats))
            if logits is not None:
                out["logits"].append(torch.from_numpy(logits))
        if cfg.metrics.converged_nfe and point.features is not None:  # converged.py: per-sample statistics
            converged = stored_reference(point, reference_kwargs(kwargs, point.model.family,
                                                                 cfg.metrics.converged_nfe), "converged")
            for key, value in batch_statistics(result.latents, images, *converged, point.features).items():
                out.setdefault(key, []).append(value)
        if point.cache is not None:
            ref_latents, ref_images = stored_reference(point, kwargs, "uncached")
            sums = paired_sums(result.latents, images, ref_latents, ref_images)  # any shard split: same metrics
            out["latent_se"].append(sums["latent_se"])
            out["reference_latent_range"].append(sums["latent_range"])
            out["image_se"].append(sums["image_se"])
            if point.features is not None and (ref_logits := point.features.embed(ref_images)[1]) is not None:
                out["reference_logits"].append(torch.from_numpy(ref_logits))
        out.setdefault("latent_numel", result.latents[0].numel())
        out.setdefault("image_numel", images[0].numel())
    return {k: (torch.cat(v) if v else None) if isinstance(v, list) else v for k, v in out.items()}


REFERENCE_FORMAT = 1  # bump when sampling numerics change: cached uncached latents are then recomputed


def stored_reference(point: Point, kwargs: dict, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Uncached latents and images for one batch sampled with `kwargs` (CPU): the uncached twin of
    a cached run, or its converged reference (converged.py). The latents are cached in
    `<results_dir>/_reference/<kind>/` keyed by everything that determines them (model weights'
    hash, sampler, NFE, guidance, seeds, labels, device type, numerics), so a sweep samples each
    reference once; images are decoded from them each time (cheap next to sampling)."""
    from .pipeline import to_images

    if point.model_sha256 is None:  # random weights: nothing to share
        reference = point.sample(**kwargs)
        return reference.latents.cpu(), reference.images.float().cpu()
    cfg = point.cfg
    identity = {"format": REFERENCE_FORMAT, "model": point.model_sha256, "arch": cfg.model.arch,
                "overrides": OmegaConf.to_container(cfg.model.overrides), "sampler": kwargs["sampler"],
                "nfe": kwargs["steps"], "guidance": [kwargs["guidance_scale"], kwargs["guidance_channels"]],
                "eta": kwargs["eta"],
                "seeds": list(kwargs["seeds"]), "labels": [int(v) for v in kwargs["labels"]],
                "device": point.device.type, "dtype": cfg.dtype, "tf32": tf32_enabled(point.device),
                "compile": bool(cfg.compile)}
    key = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cfg.results_dir) / "_reference" / kind / f"{key}.pt"
    if path.is_file():
        latents = torch.load(path, map_location="cpu", weights_only=True)
        return latents, to_images(latents.to(point.device), point.vae).float().cpu()
    reference = point.sample(**kwargs)
    latents = reference.latents.cpu()
    with atomic_path(path) as tmp:  # concurrent jobs may both write it: each rename is whole
        torch.save(latents, tmp)
    return latents, reference.images.float().cpu()


def quality_reference(point: Point):
    """The reference set FID/KID/recall score against (`metrics.features.reference_set`), loaded once
    per run for the metrics and their intervals; None without metrics.fid or real weights, or the
    `ReferenceMissing` error that says why there is none."""
    from .metrics.features import ReferenceMissing, reference_set

    cfg = point.cfg
    if point.features is None or not cfg.metrics.fid:
        return None
    try:
        return reference_set(point.features, scale=cfg.scale.name, num_images=cfg.metrics.reference_samples,
                             reference=cfg.metrics.reference, cache_dir=Path(cfg.results_dir) / "_reference")
    except ReferenceMissing as exc:
        return exc


def quality_metrics(point: Point, part: dict, ref) -> dict:
    """Quality numbers from the run's features and logits (`ref`: `quality_reference(point)`);
    None (with a note) where not available."""
    cfg = point.cfg
    out: dict = {"features": cfg.scale.features, "sfid": None}  # sFID needs spatial features we do not keep
    if point.features is None:
        return {**out, "quality_note": "random weights: quality not applicable"}
    from .metrics import (
        feature_statistics,
        fid_from_statistics,
        inception_score,
        kid,
        on_class_rate,
        per_class_rate,
        precision_recall,
    )
    from .metrics.features import ReferenceMissing

    features, labels = part["features"].numpy(), part["labels"].numpy()
    logits = None if part["logits"] is None else part["logits"].numpy()
    out["features_tag"] = point.features.tag
    if logits is not None and point.features.name == "toy" and cfg.metrics.class_accuracy:
        out["on_class_rate"] = on_class_rate(logits, labels)
        out["on_class_rate_per_class"] = per_class_rate(logits, labels, logits.shape[1])
    if logits is None:
        out["is_note"] = "no classifier logits in this feature network: IS not available"
    elif len(logits) >= 10:  # 10 splits, as the field reports it (toy: over the 10 toy classes)
        out["is"], out["is_std"] = inception_score(logits, splits=10)
    if cfg.metrics.fid:
        if isinstance(ref, ReferenceMissing):
            return {**out, "quality_note": str(ref)}
        out["reference"] = ref.origin
        out["fid"] = fid_from_statistics(*feature_statistics(features), ref.mu, ref.sigma)
        if ref.features is not None:
            out["kid"] = kid(features, ref.features)
            if len(features) > 3:
                out["precision"], out["recall"] = precision_recall(features, ref.features, k=3)
    if part["reference_logits"] is not None:
        out["class_flip_rate"] = float((logits.argmax(1) != part["reference_logits"].numpy().argmax(1)).mean())
    return out


def paired_fidelity(part: dict) -> dict:
    """Cached vs uncached on the same seeds and labels: MSE/PSNR on latents and images."""
    return paired_scores("paired", part["latent_se"], part["image_se"], part["reference_latent_range"],
                         part["latent_numel"], part["image_numel"])


def finalize(point: Point, part: dict, run_dir: Path) -> dict:
    """Grid, interleaved timing, MACs and quality of a whole run's samples; its metrics (flat)."""
    from torchvision.utils import save_image

    from .caching.engine import realised_ratios
    from .metrics import cuda_event_timer, device_sync, measure
    from .metrics.macs import macs

    cfg, model, cache = point.cfg, point.model, point.cache
    if not torch.equal(part["index"], torch.arange(cfg.metrics.num_samples)):
        raise RuntimeError(f"{run_dir}: the shards do not cover samples 0..{cfg.metrics.num_samples - 1} exactly")
    grid = run_dir / "samples.png"
    grid.parent.mkdir(parents=True, exist_ok=True)
    save_image((part["grid"] + 1) / 2, grid, nrow=8)

    # Speed: the method and the uncached reference, interleaved in this process.
    batch = cfg.metrics.timing_batch
    decode = cfg.model.latency_includes_decode
    picks = [i % cfg.metrics.num_samples for i in range(batch)]  # the first `batch` samples, cycled if fewer
    timed = dict(labels=[i % model.num_classes for i in picks], seeds=[cfg.seed + i for i in picks], decode=decode,
                 **point.common)
    fns = {"method": lambda: point.sample(cache, **timed)}
    if cache is not None:
        fns["uncached"] = lambda: point.sample(**timed)
    timer = cuda_event_timer(point.device) if point.device.type == "cuda" else None
    timings = measure(fns, repeats=cfg.metrics.timing_repeats, warmup=cfg.metrics.timing_warmup,
                      min_warmup_s=cfg.metrics.timing_min_warmup_s, sync=device_sync(point.device), timer=timer)
    method, uncached = timings["method"], timings.get("uncached", timings["method"])

    plan = None if cache is None else cache.checked_plan(model=model, sampler=point.sampler, nfe=cfg.steps)
    schedule = None if plan is None else plan.mask() if plan.token_ratio is None else plan.share()
    dynamic = plan is not None and plan.policy is not None
    if dynamic:  # decided at run time: the share of samples that computed each branch
        schedule = part["schedule"].double().mean(0)
        cached_ratio, reused_ratio_all = realised_ratios(plan, schedule)
    elif plan is not None:
        cached_ratio, reused_ratio_all = plan.cached_ratio, plan.reused_ratio_all
    else:
        cached_ratio = reused_ratio_all = 0.0
    macs_method = macs(model, schedule, nfe=cfg.steps)
    macs_uncached = macs(model, None, nfe=cfg.steps)
    metrics = {
        "nfe": cfg.steps,
        "sampler": point.sampler,
        "guidance_convention": CONVENTIONS[model.family],
        "num_samples": cfg.metrics.num_samples,
        "shards": point.shard.count,
        "latency_ms": method.median_s * 1e3,
        "latency_ms_q25": method.q25_s * 1e3,
        "latency_ms_q75": method.q75_s * 1e3,
        "latency_ms_uncached": uncached.median_s * 1e3,
        "speedup": uncached.median_s / method.median_s,
        "latency_batch": batch,
        "latency_includes_decode": decode,
        "timing_repeats": method.repeats,
        "timing_warmup_calls": method.warmup,
        "timer": "cuda_events" if timer is not None else "perf_counter",
        "macs_g": macs_method / 1e9,  # per image, linear/conv layers (the paper's count)
        "macs_all_g": macs(model, schedule, nfe=cfg.steps, count="all") / 1e9,
        "macs_uncached_g": macs_uncached / 1e9,
        "macs_speedup": macs_uncached / macs_method,
        "cached_ratio": cached_ratio,
        "reused_ratio_all": reused_ratio_all,
        "host_sync_per_evaluation": dynamic,  # dynamic methods read one scalar per evaluation
        "peak_memory_mb": peak_memory_mb(point.device),
        "dtype": cfg.dtype,
        "tf32": tf32_enabled(point.device),
        "compile": bool(cfg.compile),
        "weights_dtype": weights_dtype(model),  # linear/conv weights stored cast once (same values)
        "cuda_graph": bool(cfg.cuda_graph),
        # our Triton kernels for the mixed-dtype residual adds / skip concatenation (CUDA autocast)
        "fused_kernels": fused.active(point.device, AUTOCAST_DTYPES[cfg.dtype]),
        "graph_captures": None if point.graphs is None else point.graphs.captures,
        "cpu_heap_retained": point.device.type == "cpu" and heap_retained(),
        **point.artifacts,
    }
    if cache is not None:
        metrics.update(paired_fidelity(part))
        # what ran: the (nfe, blocks, 2) share of each branch computed, and for dynamic methods
        # every sample's realised mask (its batch's decisions)
        with atomic_path(run_dir / "schedule.pt") as tmp:
            torch.save({"schedule": schedule, "per_sample": part.get("schedule"), "cache_steps": plan.cache_steps,
                        "dynamic": dynamic}, tmp)
        metrics["schedule_file"] = "schedule.pt"
    reference = quality_reference(point)
    metrics.update(quality_metrics(point, part, reference))
    metrics.update(row_metrics(cfg, point.sampler, part, point.features is not None))  # converged.py
    if cfg.metrics.interval_resamples:  # 95% intervals of the row's numbers
        scored = reference if metrics.get("reference") else None  # the set quality_metrics scored against
        metrics.update(row_intervals(point, part, metrics, method, uncached, scored))
    if point.branch_change is not None:
        metrics["branch_change"] = point.branch_change
    return metrics


def row_intervals(point: Point, part: dict, metrics: dict, method, uncached, reference) -> dict:
    """`<m>_ci_low`/`<m>_ci_high` of the row's numbers (metrics/intervals.py): from the whole run's
    per-sample data (shards joined: any split gives the same), the timed repeats and the reference
    set the quality metrics scored against (None: none)."""
    from .metrics.intervals import row_fields

    cfg = point.cfg
    return row_fields(metrics, part, method_s=method.samples_s, uncached_s=uncached.samples_s,
                      groups=cfg.metrics.interval_groups, resamples=cfg.metrics.interval_resamples,
                      seed=cfg.metrics.interval_seed, reference=reference, device=point.device)


def write_own_shard(point: Point, run_dir: Path) -> None:
    """A sharded run's job: generate and save this shard, unless an earlier attempt did (and not force)."""
    cfg, shard = point.cfg, point.shard
    if shard_path(run_dir, shard).is_file() and not cfg.force:
        log.info("shard %d/%d of %s exists: not recomputed", shard.index, shard.count, run_dir.name)
        return
    indices = sample_range(cfg.metrics.num_samples, cfg.metrics.batch_size, shard)
    save_shard(run_dir, shard, sample_part(point, indices))
    log.info("shard %d/%d of %s written (samples %d..%d)", shard.index, shard.count, run_dir.name,
             indices.start, indices.stop - 1)


def run_point(cfg: DictConfig) -> dict:
    """Run one point and write its row (ok, failed or unsupported); returns the row.

    Sharded (shard.count > 1, or under torchrun): each job writes its shard; the job that finds
    every shard present computes the metrics and writes the row (one at a time, under a lock;
    a job that only wrote a shard returns {"run_id", "status": "shard"} and writes no row).
    """
    config = OmegaConf.to_container(cfg, resolve=True)
    run_id = run_id_for(config)
    config = row_config(config)  # the row (and W&B) get only the method's own cache keys: same id
    check_writable(cfg.results_dir)  # before any compute: a row that cannot be written is no result
    existing = _stored_row(cfg.results_dir, run_id)
    if existing and existing.get("status") == "ok" and not cfg.force:
        log.info("skipped %s: an ok row exists (force=true reruns it)", run_id)
        return existing
    check_tracker(cfg.tracker)
    run_dir = Path(cfg.results_dir) / run_id
    device = torch.device("cpu")
    try:
        device = resolve_device(cfg.device)
    except ValueError:
        pass  # reported by prepare() below, as a failed row
    row = {"run_id": run_id, **flatten({"config": config}),
           **flatten({"provenance": collect(device)}), "provenance.start_time": now()}
    try:
        point = prepare(cfg)
        sharded = point.shard.count > 1
        if sharded:
            write_own_shard(point, run_dir)
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.barrier()  # torchrun: rank 0 finalises once every rank's shard exists
                if torch.distributed.get_rank() != 0:
                    return {"run_id": run_id, "status": "shard"}
        # one finaliser at a time per run; it re-checks whether another one already finished
        with exclusive(run_dir / ".finalize.lock") if sharded else nullcontext():
            if sharded:
                done = _stored_row(cfg.results_dir, run_id)
                if done and done.get("status") == "ok" and not cfg.force:
                    return done
                missing = missing_shards(run_dir, point.shard.count)
                if missing:
                    log.info("%s: shard(s) %s of %d still missing; the job writing the last one scores the run",
                             run_id, missing, point.shard.count)
                    return {"run_id": run_id, "status": "shard"}
                part = join_parts(load_shards(run_dir, point.shard.count))
            else:
                part = sample_part(point, range(cfg.metrics.num_samples))
            metrics = finalize(point, part, run_dir)
            row.update({f"metrics.{k}": v for k, v in metrics.items()}, status="ok", error=None)
            log.debug("ok %s: %s", run_id, {k: v for k, v in metrics.items() if isinstance(v, (int, float))})
            row = _record(cfg, run_id, run_dir, row, config)
            log.info(point_line(row))
            return row
    except UnsupportedCombination as exc:
        row.update(status="unsupported", error=str(exc))
        log.warning(point_line(row))
    except Exception as exc:  # noqa: BLE001 - any failure becomes a failed row, then is reported
        out_of_memory = isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError))  # say what to lower
        row.update(status="failed", error=out_of_memory_error(cfg, device, exc) if out_of_memory
                   else f"{type(exc).__name__}: {exc}", traceback="".join(traceback.format_exception(exc))[-4000:])
        log.error(point_line(row))
    return _record(cfg, run_id, run_dir, row, config)


def out_of_memory_error(cfg: DictConfig, device: torch.device, exc: BaseException) -> str:
    """`<type>: out of memory at metrics.batch_size=B ...; peak P MB; lower ...` (first line of the cause)."""
    import resource

    if device.type == "cuda":
        peak = f"peak {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MB allocated on {device}"
    else:  # ru_maxrss: kilobytes on Linux
        peak = f"peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB resident"
    cause = (str(exc).strip().splitlines() or [""])[0]
    return (f"{type(exc).__name__}: out of memory at metrics.batch_size={cfg.metrics.batch_size} "
            f"(timing: metrics.timing_batch={cfg.metrics.timing_batch}); {peak}; lower metrics.batch_size "
            f"(and metrics.timing_batch; the timed batch sets the reported latency) and rerun"
            + (f" [{cause}]" if cause else ""))


def _stored_row(results_dir: str, run_id: str) -> dict | None:
    """The run's stored row; a corrupt file counts as none (with a warning naming it): the rerun replaces it."""
    try:
        return read_row(results_dir, run_id)
    except CorruptRow as exc:
        log.warning("rerunning %s: %s", run_id, exc)
        return None


def _record(cfg: DictConfig, run_id: str, run_dir: Path, row: dict, config: dict) -> dict:
    """The one place a row is written (then mirrored to W&B)."""
    row["provenance.end_time"] = now()
    tracker = make_tracker(cfg.tracker, group=cfg.tracker.group or _sweep_name(), name=run_id,
                           results_dir=cfg.results_dir, config=flatten(config))
    if tracker is not None:
        row["provenance.wandb_dir"] = tracker.directory
    write_row(cfg.results_dir, run_id, row)
    if tracker is not None:
        tracker.log({k.removeprefix("metrics."): v for k, v in row.items() if k.startswith("metrics.")},
                    image_path=str(run_dir / "samples.png"))
        tracker.finish(exit_code=0 if row["status"] == "ok" else 1)
    return row


def _sweep_name() -> str:
    try:
        hc = HydraConfig.get()
    except ValueError:
        return "interactive"
    return Path(hc.sweep.dir if hc.mode == RunMode.MULTIRUN else hc.run.dir).name


def _stop_on_sigterm(signum, frame) -> None:
    """SIGTERM (a preemption's first signal, `kill`): stop the point in flight by unwinding, so
    every atomic write in progress removes its temp file; no row is written (SystemExit is not a
    failure), and a relaunch recomputes the point."""
    log.warning("SIGTERM: stopping; the point in flight writes no row and a relaunch recomputes it")
    raise SystemExit(128 + signum)


def entry(cfg: DictConfig) -> None:
    """The command: one point (a torchrun rank: one shard of it); a single failed run exits 1."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _stop_on_sigterm)  # not under submitit, which handles its own signals
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        init_distributed(cfg.device)  # torchrun: each rank generates one shard of the run
    try:
        row = run_point(cfg)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if HydraConfig.initialized():  # the sweep summary (summary.SweepSummary) finds the row from here
        write_run_id(HydraConfig.get().runtime.output_dir, row["run_id"])
    if row["status"] not in ("ok", "shard") and HydraConfig.get().mode != RunMode.MULTIRUN:
        sys.exit(1)  # a single failed run fails the command; a sweep goes on


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    # Under `python -m` this module is __main__, which submitit (SLURM) pickles by value; going
    # through the importable module makes it pickle a reference instead.
    import l2c_bench.run

    l2c_bench.run.entry(cfg)


if __name__ == "__main__":
    main()
