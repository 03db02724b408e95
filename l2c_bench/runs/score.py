"""Score one run from its samples: the grid, interleaved timing, MACs, quality and the 95%
intervals of each number (a flat dict of metrics)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ..metrics.frames import filmstrip
from ..metrics.registry import METRICS, Scoring
from ..models import fused
from ..models.layers import AUTOCAST_DTYPES, weights_dtype
from ..sampling import CONVENTIONS
from ..sampling.noise import sample_seed
from ..system.devices import heap_retained, peak_memory_mb, tf32_enabled
from ..system.files import atomic_path
from . import per_sample
from .prepare import Point
from .sample import PART_PHASES, REUSE


def finalize(point: Point, part: dict, run_dir: Path) -> dict:
    """Grid, interleaved timing, MACs and quality of a whole run's samples; its metrics (flat):
    the run's cost and settings, then each registered metric's fields (metrics/registry.py) and
    their intervals."""
    from torchvision.utils import save_image

    run = point.run
    if not torch.equal(part["index"], torch.arange(run.metrics.num_samples)):
        raise RuntimeError(f"{run_dir}: the shards do not cover samples 0..{run.metrics.num_samples - 1} exactly")
    grid = run_dir / "samples.png"
    grid.parent.mkdir(parents=True, exist_ok=True)
    save_image((filmstrip(part["grid"]) + 1) / 2, grid, nrow=8)  # a video: its frames side by side
    start_s = time.perf_counter()
    method, uncached, timing = timed(point)
    timing_s = time.perf_counter() - start_s
    plan, schedule, dynamic, ratios = realised_schedule(point, part)
    metrics = {**run_fields(point, plan, schedule, ratios), **timing, **point.artifacts}
    if point.cache is not None:
        # what ran: the (nfe, blocks, 2) share of each branch computed, and for dynamic methods
        # every sample's realised mask (its batch's decisions)
        with atomic_path(run_dir / "schedule.pt") as tmp:
            torch.save({"schedule": schedule, "per_sample": part.get("schedule"), "cache_steps": plan.cache_steps,
                        "dynamic": dynamic}, tmp)
        metrics["schedule_file"] = "schedule.pt"
    start_s = time.perf_counter()
    reference = quality_reference(point)
    scoring = Scoring(point, reference)
    for metric in METRICS.values():  # in order: a metric may read an earlier one's fields
        metrics.update(metric.value(part, scoring, metrics))
    scoring_s = time.perf_counter() - start_s
    replicates: dict = {}  # the set metrics' jackknife replicates, for the per-sample record
    if run.metrics.interval_resamples:  # 95% intervals of the row's numbers
        scored = reference if metrics.get("reference") else None  # the set quality_metrics scored against
        metrics.update(row_intervals(point, part, metrics, method, uncached, scored, replicates))
    if point.branch_change is not None:
        metrics["branch_change"] = point.branch_change
    metrics["samples_file"] = per_sample.write(point, part, metrics, replicates, run_dir).name
    metrics.update(phase_fields(part, timing_s=timing_s, scoring_s=scoring_s, intervals_s=metrics.get("intervals_s")))
    metrics.update(reuse_fields(part))
    return metrics


def phase_fields(part: dict, *, timing_s: float, scoring_s: float, intervals_s: float | None) -> dict:
    """`phase_<name>_s`: where the run's time went (sample_part's phases, summed over shards, and
    finalize's timing, scoring and intervals); the sweep summary adds them up over its rows."""
    phases = part.get("phase_s")  # None: shards written before phases were kept
    spent = dict(zip(PART_PHASES, [0.0] * len(PART_PHASES) if phases is None else phases.sum(0).tolist(), strict=True))
    spent["scoring"] += scoring_s
    spent["timing"] = timing_s
    if intervals_s is not None:  # intervals off (metrics.interval_resamples=0): no such phase
        spent["intervals"] = intervals_s
    return {f"phase_{name}_s": seconds for name, seconds in spent.items()}


def reuse_fields(part: dict) -> dict:
    """`<reference>_samples_{read,sampled}`: of the uncached twin's and the converged reference's
    samples, how many the shared store (or the package) held and how many this run sampled (summed
    over shards; None for shards written before they were counted)."""
    counts = part.get("reuse_n")
    values = [None] * len(REUSE) if counts is None else [int(v) for v in counts.sum(0).tolist()]
    return {f"{key.rsplit('_', 1)[0]}_samples_{key.rsplit('_', 1)[1]}": value
            for key, value in zip(REUSE, values, strict=True)}


def timed(point: Point) -> tuple:
    """Speed: the method and the uncached reference, interleaved in this process, on the first
    `metrics.timing_batch` samples (cycled if fewer); (method, uncached) `Timing`s and their row fields."""
    from ..metrics import cuda_event_timer, device_sync, measure
    from ..metrics.intervals import timing_is_sure

    run, model, cache = point.run, point.model, point.cache
    batch = run.metrics.timing_batch
    decode = run.model.latency_includes_decode
    picks = [i % run.metrics.num_samples for i in range(batch)]  # the first `batch` samples, cycled if fewer
    kwargs = dict(labels=[i % model.num_classes for i in picks], seeds=[sample_seed(run.seed, i) for i in picks],
                  decode=decode, **point.common)
    fns = {"method": lambda: point.sample(cache, **kwargs)}
    if cache is not None:
        fns["uncached"] = lambda: point.sample(**kwargs)
    timer = cuda_event_timer(point.device) if point.device.type == "cuda" else None
    m = run.metrics
    # stops once the row's own speedup interval (same resamples and seed) is narrow enough
    sure = timing_is_sure(m.timing_halfwidth, resamples=m.interval_resamples, seed=m.interval_seed)
    timings = measure(fns, repeats=m.timing_repeats, warmup=m.timing_warmup, min_warmup_s=m.timing_min_warmup_s,
                      sync=device_sync(point.device), timer=timer, sure=sure, min_repeats=m.timing_min_repeats)
    method, uncached = timings["method"], timings.get("uncached", timings["method"])
    return method, uncached, {
        "latency_ms": method.median_s * 1e3,
        "latency_ms_q25": method.q25_s * 1e3,
        "latency_ms_q75": method.q75_s * 1e3,
        "latency_ms_uncached": uncached.median_s * 1e3,
        "speedup": uncached.median_s / method.median_s,
        "latency_batch": batch,
        "latency_includes_decode": decode,
        "timing_repeats": method.repeats,
        "timing_stop": method.stop,
        "timing_warmup_calls": method.warmup,
        "timer": "cuda_events" if timer is not None else "perf_counter",
    }


def realised_schedule(point: Point, part: dict) -> tuple:
    """(plan, schedule, dynamic, (cached_ratio, reused_ratio_all)) of what ran: the plan's schedule,
    or for a method decided at run time the share of samples that computed each branch."""
    from ..engine.core import realised_ratios

    cache = point.cache
    plan = None if cache is None else cache.checked_plan(model=point.model, sampler=point.sampler, nfe=point.run.steps)
    schedule = None if plan is None else plan.schedule()
    dynamic = plan is not None and plan.decided_at_run_time
    if dynamic:  # decided at run time: the share of samples that computed each branch
        schedule = part["schedule"].double().mean(0)
        ratios = realised_ratios(plan, schedule)
    elif plan is not None:
        ratios = plan.cached_ratio, plan.reused_ratio_all
    else:
        ratios = 0.0, 0.0
    return plan, schedule, dynamic, ratios


def run_fields(point: Point, plan, schedule, ratios: tuple[float, float]) -> dict:
    """The row's settings, MACs, realised cached ratios and numerics (timing: `timed`)."""
    from ..engine.model import latent_shape
    from ..metrics.macs import macs

    run, model = point.run, point.model
    macs_method = macs(model, schedule, nfe=run.steps, plan=plan)
    macs_uncached = macs(model, None, nfe=run.steps)
    return {
        "nfe": run.steps,
        "sampler": point.sampler,
        "latent_shape": list(latent_shape(model)),  # one sample's: (C, H, W), video (C, F, H, W)
        "guidance_convention": CONVENTIONS[model.family],
        "num_samples": run.metrics.num_samples,
        "shards": point.shard.count,
        "macs_g": macs_method / 1e9,  # per image, linear/conv layers (the paper's count)
        "macs_all_g": macs(model, schedule, nfe=run.steps, count="all", plan=plan) / 1e9,
        "macs_uncached_g": macs_uncached / 1e9,
        "macs_speedup": macs_uncached / macs_method,
        "cached_ratio": ratios[0],
        "reused_ratio_all": ratios[1],
        # dynamic methods read one scalar per evaluation (a peer's hooks may decide without reading back)
        "host_sync_per_evaluation": plan is not None and (plan.policy is not None
                                                          or bool(getattr(plan.hooks, "host_sync", False))),
        "peak_memory_mb": peak_memory_mb(point.device),
        "dtype": run.dtype,
        "tf32": tf32_enabled(point.device),
        "compile": bool(run.compile),
        "weights_dtype": weights_dtype(model),  # linear/conv weights stored cast once (same values)
        "cuda_graph": bool(run.cuda_graph),
        # our Triton kernels for the mixed-dtype residual adds / skip concatenation (CUDA autocast)
        "fused_kernels": fused.active(point.device, AUTOCAST_DTYPES[run.dtype]),
        "graph_captures": None if point.graphs is None else point.graphs.captures,
        "cpu_heap_retained": point.device.type == "cpu" and heap_retained(),
    }


def row_intervals(point: Point, part: dict, metrics: dict, method, uncached, reference, replicates: dict) -> dict:
    """`<m>_ci_low`/`<m>_ci_high` of the row's numbers (metrics/intervals.py): from the whole run's
    per-sample data (shards joined: any split gives the same), the timed repeats and the reference
    set the quality metrics scored against (None: none); `replicates` receives the set metrics'
    jackknife replicates."""
    from ..metrics.registry import row_fields

    run = point.run
    return row_fields(metrics, part, method_s=method.samples_s, uncached_s=uncached.samples_s,
                      groups=run.metrics.interval_groups, resamples=run.metrics.interval_resamples,
                      seed=run.metrics.interval_seed, reference=reference, device=point.device, replicates=replicates)


def quality_reference(point: Point):
    """The reference set FID/KID/recall score against (`metrics.features.reference_set`), loaded once
    per run for the metrics and their intervals; None without metrics.fid or real weights, or the
    `ReferenceMissing` error that says why there is none."""
    from ..metrics.features import ReferenceMissing, reference_set

    run = point.run
    if point.features is None or not run.metrics.fid:
        return None
    reference = run.metrics.reference
    prompts = getattr(point.model, "prompt_set", None)
    if not reference and prompts is not None and prompts.images is not None:  # the prompt set's own images
        reference = list(prompts.images)
    try:
        return reference_set(point.features, scale=run.scale.name, num_images=run.metrics.reference_samples,
                             reference=reference, cache_dir=Path(run.results_dir) / "_reference")
    except ReferenceMissing as exc:
        return exc
