"""One benchmark point: build -> sample -> measure -> record.

    python -m l2c_bench.run                                    # toy DiT, DDIM, 20 NFE
    python -m l2c_bench.run -m model=dit,uvit steps=10,20,50   # a six-point sweep
    python -m l2c_bench.run --cfg job                          # print the resolved config only

Each run writes `<results_dir>/<run_id>/result.json` (status ok or failed) and `samples.png`,
and mirrors both to W&B (offline by default). A run whose ok row exists is skipped unless
`force=true`.
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from . import generate
from .caching import CACHE_METHODS, CacheMethod, FixedPlan, UnsupportedCombination, make_cache
from .config import register_configs
from .devices import peak_memory_mb, resolve_device
from .models import build_model, load_checkpoint
from .records import flatten, read_row, run_id_for, write_row
from .records.provenance import collect, now
from .records.tracker import make_tracker
from .sampling import check_sampler

log = logging.getLogger("l2c_bench.run")
TOY_ASSETS = Path(__file__).resolve().parent / "toy" / "assets"
register_configs()


class RunConfigError(ValueError):
    """A configuration value that cannot work; raised before any compute."""


def build_cache(cfg: DictConfig) -> CacheMethod | None:
    """The configured cache method with only its own parameters (None for `none`)."""
    if cfg.cache.name not in CACHE_METHODS:
        raise RunConfigError(f"cache.name={cfg.cache.name!r} is unknown; valid: {', '.join(CACHE_METHODS)}")
    if cfg.cache.name == "none":
        return None
    from dataclasses import fields

    params = {f.name: cfg.cache[f.name] for f in fields(CACHE_METHODS[cfg.cache.name]) if f.name in cfg.cache}
    return make_cache(cfg.cache.name, **params)


def validate(cfg: DictConfig) -> tuple[str, CacheMethod | None]:
    """Check every value that can be checked without compute; return sampler name and cache."""
    sampler = cfg.sampler.name or cfg.model.default_sampler
    if cfg.model.family not in ("dit", "uvit"):
        raise RunConfigError(f"model.family={cfg.model.family!r} is unknown; valid: dit, uvit")
    check_sampler(sampler, cfg.model.family, cfg.steps)
    if cfg.model.vae not in ("none", "sd"):
        raise RunConfigError(f"model.vae={cfg.model.vae!r} is unknown; valid: none, sd")
    for key in ("num_samples", "batch_size", "timing_batch", "timing_repeats"):
        if cfg.metrics[key] < 1:
            raise RunConfigError(f"metrics.{key} must be >= 1, got {cfg.metrics[key]}")
    if cfg.metrics.fid and cfg.metrics.num_samples < 2:
        raise RunConfigError("metrics.fid needs metrics.num_samples >= 2")
    cache = build_cache(cfg)
    if cache is not None and cache.plans_without_weights:
        # plan on a weightless copy: router shapes etc. fail before any compute
        cache.plan(model=build_model(cfg.model.arch, device="meta", **cfg.model.overrides),
                   sampler=sampler, nfe=cfg.steps)
    return sampler, cache


def load_model(cfg: DictConfig, device: torch.device):
    """The diffusion model (and VAE, or None) as configured; checkpoints load strictly."""
    checkpoint = cfg.model.checkpoint
    if checkpoint == "toy":
        if cfg.scale.name != "toy":
            raise RunConfigError("model.checkpoint=toy only exists at scale=toy")
        checkpoint = TOY_ASSETS / f"{cfg.model.family}_toy.pt"
    if checkpoint == "random":
        model = build_model(cfg.model.arch, **cfg.model.overrides)
    else:  # built weightless, then given the file's tensors: no wasted init of a large model
        model = build_model(cfg.model.arch, device="meta", **cfg.model.overrides)
        load_checkpoint(model, checkpoint, config_key="model.checkpoint")
    vae = None
    if cfg.model.vae == "sd":
        from .models.vae import build_vae, load_vae

        if checkpoint == "random" or cfg.model.vae_checkpoint == "random":
            vae = build_vae()  # speed studies: weights do not matter
        else:
            vae = load_vae(cfg.model.vae_checkpoint, config_key="model.vae_checkpoint")
        vae = vae.to(device)
    return model.to(device).eval().requires_grad_(False), vae


def quality_metrics(cfg: DictConfig, images: torch.Tensor, labels: torch.Tensor,
                    reference_images: torch.Tensor | None) -> dict:
    """Quality numbers for the configured feature network; None where not available."""
    out: dict = {"features": cfg.scale.features}
    if cfg.model.checkpoint == "random":
        return {**out, "quality_note": "random weights: quality not applicable"}
    if cfg.scale.features != "toy":
        return {**out, "quality_note": "inception features are not wired into run.py yet"}
    from .metrics import feature_statistics, fid_from_statistics, on_class_rate, per_class_rate
    from .metrics.toy_features import toy_features, toy_reference_statistics

    feats, logits = toy_features(images)
    if cfg.metrics.class_accuracy:
        out["on_class_rate"] = on_class_rate(logits, labels.numpy())
        out["on_class_rate_per_class"] = per_class_rate(logits, labels.numpy(), logits.shape[1])
    if cfg.metrics.fid:
        mu_ref, sigma_ref = toy_reference_statistics(cfg.metrics.reference_samples,
                                                     Path(cfg.results_dir) / "_reference")
        out["fid"] = fid_from_statistics(*feature_statistics(feats), mu_ref, sigma_ref)
    if reference_images is not None:
        _, reference_logits = toy_features(reference_images)
        out["class_flip_rate"] = float((logits.argmax(1) != reference_logits.argmax(1)).mean())
    return out


def paired_fidelity(result, reference) -> dict:
    """Cached vs uncached on the same seeds and labels: MSE/PSNR on latents and images."""
    from .metrics.quality import mse, psnr

    return {
        "paired_latent_mse": mse(result.latents, reference.latents),
        "paired_image_mse": mse(result.images, reference.images),
        "paired_image_psnr_db": psnr(result.images, reference.images, peak_to_peak=2.0),
    }


def execute(cfg: DictConfig, run_dir: Path) -> dict:
    """Sample, time and score one point; returns its metrics (flat)."""
    from torchvision.utils import save_image

    from .metrics import device_sync, measure

    sampler, cache = validate(cfg)
    device = resolve_device(cfg.device)
    model, vae = load_model(cfg, device)
    if cache is not None:  # plan once (router read, calibration): never inside a timed call
        cache = FixedPlan.of(cache, model=model, sampler=sampler, nfe=cfg.steps)
    num_classes = model.num_classes
    seeds = [cfg.seed + i for i in range(cfg.metrics.num_samples)]
    labels = torch.arange(cfg.metrics.num_samples) % num_classes  # class-balanced
    common = dict(steps=cfg.steps, sampler=sampler, guidance_scale=cfg.model.guidance_scale,
                  guidance_channels=cfg.model.guidance_channels, eta=cfg.sampler.eta, vae=vae)
    every = dict(labels=labels, seeds=seeds, decode=True, batch_size=cfg.metrics.batch_size, progress=True)
    result = generate(model, cache=cache, **every, **common)
    reference = generate(model, **every, **common) if cache is not None else None
    images = result.images.cpu()
    grid = run_dir / "samples.png"
    grid.parent.mkdir(parents=True, exist_ok=True)
    save_image((images[: cfg.metrics.grid_samples] + 1) / 2, grid, nrow=8)

    # Speed: the method and the uncached reference, interleaved in this process.
    batch = cfg.metrics.timing_batch
    decode = cfg.model.latency_includes_decode
    picks = [i % len(seeds) for i in range(batch)]  # the first `batch` samples, cycled if fewer
    timed = dict(labels=labels[picks], seeds=[seeds[i] for i in picks], decode=decode, **common)
    fns = {"method": lambda: generate(model, cache=cache, **timed)}
    if cache is not None:
        fns["uncached"] = lambda: generate(model, **timed)
    timings = measure(fns, repeats=cfg.metrics.timing_repeats, warmup=cfg.metrics.timing_warmup,
                      sync=device_sync(device))
    method, uncached = timings["method"], timings.get("uncached", timings["method"])

    from .metrics.macs import macs

    macs_method = macs(model, result.schedule, nfe=cfg.steps)
    macs_uncached = macs(model, None, nfe=cfg.steps)
    metrics = {
        "nfe": cfg.steps,
        "sampler": sampler,
        "guidance_convention": result.guidance_convention,
        "num_samples": len(seeds),
        "latency_ms": method.median_s * 1e3,
        "latency_ms_q25": method.q25_s * 1e3,
        "latency_ms_q75": method.q75_s * 1e3,
        "latency_ms_uncached": uncached.median_s * 1e3,
        "speedup": uncached.median_s / method.median_s,
        "latency_batch": batch,
        "latency_includes_decode": decode,
        "timing_repeats": method.repeats,
        "macs_g": macs_method / 1e9,  # per image, linear/conv layers (the paper's count)
        "macs_all_g": macs(model, result.schedule, nfe=cfg.steps, count="all") / 1e9,
        "macs_uncached_g": macs_uncached / 1e9,
        "macs_speedup": macs_uncached / macs_method,
        "cached_ratio": result.cached_ratio,
        "reused_ratio_all": 0.0 if result.plan is None else result.plan.reused_ratio_all,
        "peak_memory_mb": peak_memory_mb(device),
        "dtype": "float32",
    }
    if reference is not None:
        metrics.update(paired_fidelity(result, reference))
    metrics.update(quality_metrics(cfg, images, labels, None if reference is None else reference.images.cpu()))
    return metrics


def run_point(cfg: DictConfig) -> dict:
    """Run one point and write its row (ok or failed). Returns the row."""
    config = OmegaConf.to_container(cfg, resolve=True)
    run_id = run_id_for(config)
    existing = read_row(cfg.results_dir, run_id)
    if existing and existing.get("status") == "ok" and not cfg.force:
        log.info("skipped %s: an ok row exists (force=true reruns it)", run_id)
        return existing
    run_dir = Path(cfg.results_dir) / run_id
    device = torch.device("cpu")
    try:
        device = resolve_device(cfg.device)
    except ValueError:
        pass  # reported by execute() below, as a failed row
    row = {"run_id": run_id, **flatten({"config": config}),
           **flatten({"provenance": collect(device)}), "provenance.start_time": now()}
    group = cfg.tracker.group or _sweep_name()
    tracker = make_tracker(cfg.tracker, group=group, name=run_id, results_dir=cfg.results_dir,
                           config=flatten(config))
    status = "failed"
    try:
        metrics = execute(cfg, run_dir)
        row.update({f"metrics.{k}": v for k, v in metrics.items()}, status="ok", error=None)
        status = "ok"
        log.info("ok %s: %s", run_id, {k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    except UnsupportedCombination as exc:
        row.update(status="unsupported", error=str(exc))
        log.warning("unsupported %s: %s", run_id, exc)
    except Exception as exc:  # noqa: BLE001 - any failure becomes a failed row, then is reported
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                   traceback="".join(traceback.format_exception(exc))[-4000:])
        log.error("failed %s: %s: %s", run_id, type(exc).__name__, exc)
    row["provenance.end_time"] = now()
    if tracker is not None:
        row["provenance.wandb_dir"] = tracker.directory
    write_row(cfg.results_dir, run_id, row)
    if tracker is not None:
        tracker.log({k.removeprefix("metrics."): v for k, v in row.items() if k.startswith("metrics.")},
                    image_path=str(run_dir / "samples.png"))
        tracker.finish(exit_code=0 if status == "ok" else 1)
    return row


def _sweep_name() -> str:
    try:
        hc = HydraConfig.get()
    except ValueError:
        return "interactive"
    return Path(hc.sweep.dir if hc.mode == RunMode.MULTIRUN else hc.run.dir).name


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    row = run_point(cfg)
    if row["status"] != "ok" and HydraConfig.get().mode != RunMode.MULTIRUN:
        sys.exit(1)  # a single failed run fails the command; a sweep goes on


if __name__ == "__main__":
    main()
