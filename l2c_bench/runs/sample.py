"""Sample one run's images (or one shard of them) with the method and, for a cached run, uncached
on the same seeds; keep the per-sample statistics the scores need."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from ..metrics.quality import paired_sums
from ..sampling.noise import sample_seed
from ..system.devices import tf32_enabled
from ..system.files import atomic_path
from .converged import batch_statistics, reference_kwargs
from .prepare import Point
from .shards import sample_range, save_shard, shard_path

log = logging.getLogger("l2c_bench.run")


def sample_part(point: Point, indices: range, progress: bool = True) -> dict:
    """Generate samples `indices` batch by batch (global batches, see shards.py) with the method
    and, for a cached run, uncached on the same seeds; keep per-sample statistics (CPU)."""
    cfg, common = point.cfg, point.common
    out: dict[str, list] = {k: [] for k in ("index", "labels", "features", "logits", "reference_logits",
                                            "latent_se", "reference_latent_range", "image_se", "grid", "schedule",
                                            "clip_score")}
    size = cfg.metrics.batch_size
    for start in tqdm(range(indices.start, indices.stop, size), disable=not progress, desc="batches", leave=False):
        idx = torch.arange(start, min(start + size, indices.stop))
        kwargs = dict(labels=idx % point.model.num_classes, seeds=[sample_seed(cfg.seed, int(i)) for i in idx], decode=True,
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
        if point.clip is not None:  # each image against its own prompt's text
            texts = [point.model.prompt_texts[int(label)] for label in result.labels]
            out["clip_score"].append(torch.from_numpy(point.clip.scores(images, texts)))
        if cfg.metrics.converged_nfe and point.features is not None:  # converged.py: per-sample statistics
            converged = stored_reference(point, reference_kwargs(kwargs, point.model.family,
                                                                 cfg.metrics.converged_nfe), "converged")
            for key, value in batch_statistics(result.latents, images, *converged, point.features).items():
                out.setdefault(key, []).append(value)
            for key, value in perceptual_scores(point, images, converged[1], "converged").items():
                out.setdefault(key, []).append(value)
        if point.cache is not None:
            ref_latents, ref_images = stored_reference(point, kwargs, "uncached")
            for key, value in perceptual_scores(point, images, ref_images, "paired").items():
                out.setdefault(key, []).append(value)
            sums = paired_sums(result.latents, images, ref_latents, ref_images)  # any shard split: same metrics
            out["latent_se"].append(sums["latent_se"])
            out["reference_latent_range"].append(sums["latent_range"])
            out["image_se"].append(sums["image_se"])
            if point.features is not None and (ref_logits := point.features.embed(ref_images)[1]) is not None:
                out["reference_logits"].append(torch.from_numpy(ref_logits))
        out.setdefault("latent_numel", result.latents[0].numel())
        out.setdefault("image_numel", images[0].numel())
    return {k: (torch.cat(v) if v else None) if isinstance(v, list) else v for k, v in out.items()}


def perceptual_scores(point: Point, images: torch.Tensor, reference: torch.Tensor, prefix: str) -> dict:
    """`<prefix>_image_ssim` (and `<prefix>_image_lpips` where metrics.lpips_backbone is set) of each
    image against its paired reference image (same seed), (n,) float64 each; images only (a model
    whose samples are latents without a VAE has none)."""
    from ..metrics.perceptual import ssim_per_sample

    if images.shape[1] != 3:  # latents, not images
        return {}
    images, reference = images.to(point.device), reference.to(point.device)  # the run's GPU at paper scale
    out = {f"{prefix}_image_ssim": ssim_per_sample(images, reference)}
    if point.lpips is not None:
        out[f"{prefix}_image_lpips"] = point.lpips.scores(images, reference)
    return out


REFERENCE_FORMAT = 1  # bump when sampling numerics change: cached uncached latents are then recomputed


def stored_reference(point: Point, kwargs: dict, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Uncached latents and images for one batch sampled with `kwargs` (CPU): the uncached twin of
    a cached run, or its converged reference (converged.py). The latents are cached in
    `<results_dir>/_reference/<kind>/` keyed by everything that determines them (model weights'
    hash, sampler, NFE, guidance, seeds, labels, device type, numerics), so a sweep samples each
    reference once; images are decoded from them each time (cheap next to sampling)."""
    from ..pipeline import to_images

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

