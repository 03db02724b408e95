"""Score one run from its samples: the grid, interleaved timing, MACs, quality and the 95%
intervals of each number (a flat dict of metrics)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..metrics.intervals import MEAN_RANGES
from ..metrics.quality import paired_scores
from ..models import fused
from ..models.layers import AUTOCAST_DTYPES, weights_dtype
from ..sampling import CONVENTIONS
from ..sampling.noise import sample_seed
from ..system.devices import heap_retained, peak_memory_mb, tf32_enabled
from ..system.files import atomic_path
from . import per_sample
from .converged import row_metrics
from .prepare import Point


def finalize(point: Point, part: dict, run_dir: Path) -> dict:
    """Grid, interleaved timing, MACs and quality of a whole run's samples; its metrics (flat)."""
    from torchvision.utils import save_image

    from ..engine.core import realised_ratios
    from ..metrics import cuda_event_timer, device_sync, measure
    from ..metrics.macs import macs

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
    timed = dict(labels=[i % model.num_classes for i in picks], seeds=[sample_seed(cfg.seed, i) for i in picks], decode=decode,
                 **point.common)
    fns = {"method": lambda: point.sample(cache, **timed)}
    if cache is not None:
        fns["uncached"] = lambda: point.sample(**timed)
    timer = cuda_event_timer(point.device) if point.device.type == "cuda" else None
    timings = measure(fns, repeats=cfg.metrics.timing_repeats, warmup=cfg.metrics.timing_warmup,
                      min_warmup_s=cfg.metrics.timing_min_warmup_s, sync=device_sync(point.device), timer=timer)
    method, uncached = timings["method"], timings.get("uncached", timings["method"])

    plan = None if cache is None else cache.checked_plan(model=model, sampler=point.sampler, nfe=cfg.steps)
    schedule = None if plan is None else plan.schedule()
    dynamic = plan is not None and plan.decided_at_run_time
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
        # dynamic methods read one scalar per evaluation (a peer's hooks may decide without reading back)
        "host_sync_per_evaluation": plan is not None and (plan.policy is not None
                                                          or bool(getattr(plan.hooks, "host_sync", False))),
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
    metrics.update(perceptual_means(part, point, metrics))
    replicates: dict = {}  # the set metrics' jackknife replicates, for the per-sample record
    if cfg.metrics.interval_resamples:  # 95% intervals of the row's numbers
        scored = reference if metrics.get("reference") else None  # the set quality_metrics scored against
        metrics.update(row_intervals(point, part, metrics, method, uncached, scored, replicates))
    if point.branch_change is not None:
        metrics["branch_change"] = point.branch_change
    metrics["samples_file"] = per_sample.write(point, part, metrics, replicates, run_dir).name
    return metrics


def perceptual_means(part: dict, point: Point, metrics: dict) -> dict:
    """Run means of the per-sample SSIM (and LPIPS) against the converged samples and the uncached
    twin, with their jackknife intervals added by row_intervals; `lpips_note` where LPIPS was skipped."""
    out = {}
    for key in (k for k in MEAN_RANGES if k.endswith(("_ssim", "_lpips"))):
        if key.startswith("converged") and metrics.get("converged_image_mse") is None:
            continue  # no pairs with the converged samples (a stochastic sampler: converged.row_metrics)
        if part.get(key) is not None:
            out[key] = float(part[key].double().mean())
    if point.lpips is not None:
        out["lpips_model"] = point.lpips.tag
    elif any(k in out for k in ("converged_image_ssim", "paired_image_ssim")):
        out["lpips_note"] = "LPIPS skipped: no local weights (metrics.lpips_backbone)"
    return out


def row_intervals(point: Point, part: dict, metrics: dict, method, uncached, reference, replicates: dict) -> dict:
    """`<m>_ci_low`/`<m>_ci_high` of the row's numbers (metrics/intervals.py): from the whole run's
    per-sample data (shards joined: any split gives the same), the timed repeats and the reference
    set the quality metrics scored against (None: none); `replicates` receives the set metrics'
    jackknife replicates."""
    from ..metrics.intervals import row_fields

    cfg = point.cfg
    return row_fields(metrics, part, method_s=method.samples_s, uncached_s=uncached.samples_s,
                      groups=cfg.metrics.interval_groups, resamples=cfg.metrics.interval_resamples,
                      seed=cfg.metrics.interval_seed, reference=reference, device=point.device, replicates=replicates)


def quality_reference(point: Point):
    """The reference set FID/KID/recall score against (`metrics.features.reference_set`), loaded once
    per run for the metrics and their intervals; None without metrics.fid or real weights, or the
    `ReferenceMissing` error that says why there is none."""
    from ..metrics.features import ReferenceMissing, reference_set

    cfg = point.cfg
    if point.features is None or not cfg.metrics.fid:
        return None
    reference = cfg.metrics.reference
    prompts = getattr(point.model, "prompt_set", None)
    if not reference and prompts is not None and prompts.images is not None:  # the prompt set's own images
        reference = list(prompts.images)
    try:
        return reference_set(point.features, scale=cfg.scale.name, num_images=cfg.metrics.reference_samples,
                             reference=reference, cache_dir=Path(cfg.results_dir) / "_reference")
    except ReferenceMissing as exc:
        return exc


def quality_metrics(point: Point, part: dict, ref) -> dict:
    """Quality numbers from the run's features and logits (`ref`: `quality_reference(point)`);
    None (with a note) where not available."""
    cfg = point.cfg
    out: dict = {"features": cfg.scale.features, "sfid": None}  # sFID needs spatial features we do not keep
    if (prompts := getattr(point.model, "prompt_set", None)) is not None:  # what the samples were conditioned on
        out["prompt_set"] = prompts.origin
    if part.get("clip_score") is not None:  # text-to-image: each image against its prompt (metrics/clip.py)
        out["clip_score"] = float(part["clip_score"].double().mean())
        out["clip_model"] = point.clip.tag
    if point.features is None:
        return {**out, "quality_note": "no image metrics: random weights, or latents without a VAE"}
    from ..metrics import (
        feature_statistics,
        fid_from_statistics,
        inception_score,
        kid,
        on_class_rate,
        per_class_rate,
        precision_recall,
    )
    from ..metrics.features import ReferenceMissing

    features, labels = part["features"].numpy(), part["labels"].numpy()
    logits = None if part["logits"] is None else part["logits"].numpy()
    out["features_tag"] = point.features.tag
    class_conditioned = getattr(point.model, "bank", None) is None  # text classes' labels are prompts
    if logits is not None and point.features.name == "toy" and cfg.metrics.class_accuracy and class_conditioned:
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

