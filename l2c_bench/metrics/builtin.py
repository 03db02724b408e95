"""The benchmark's metrics, registered in scoring order (metrics/registry.py; docs/metrics.md says
what each measures): the converged-reference scores, the paired fidelity to the uncached twin,
the set metrics, the CLIP score, and SSIM/LPIPS against the converged samples and the twin. The
cost axes (latency, speedup, MACs, cached ratio) are measured by runs/score.py, which must time
the sampler itself; they are registered here for their directions."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from ..engine.model import latent_shape
from .frames import as_frames, is_video, per_sample_mean
from .intervals import paired_fields, quality_fields
from .quality import paired_scores, paired_sums
from .registry import Batch, Jackknife, Metric, PerSampleMean, Scoring, register


@register
class Cost(Metric):
    """Speed and compute: measured by runs/score.py (timing interleaved with the uncached
    sampler, MACs from the plan); their intervals are metrics.intervals.timing_fields'."""

    name = "cost"
    directions = {"latency_ms": False, "latency_ms_uncached": False, "speedup": True, "macs_g": False,
                  "macs_all_g": False, "macs_speedup": True, "cached_ratio": True}


@register
class Converged(Metric):
    """Against the converged reference (metrics/converged.py): paired MSE/PSNR, FID/KID vs converged
    (images only: a video has no feature network; its per-frame PSNR is metrics/video.py's)."""

    name = "converged"
    directions = {"converged_latent_mse": False, "converged_latent_psnr_db": True, "converged_image_mse": False,
                  "converged_image_psnr_db": True, "fid_vs_converged": False, "kid_vs_converged": False}

    def update(self, batch: Batch) -> Mapping[str, torch.Tensor]:
        from .converged import batch_statistics

        converged = batch.reference("converged")
        if converged is None:
            return {}
        return batch_statistics(batch.result.latents, batch.images, *converged, batch.point.features)

    def value(self, part: Mapping, scoring: Scoring, row: Mapping) -> dict:
        from .converged import row_metrics

        point = scoring.point
        return row_metrics(point.run, point.sampler, part, point.images, video=len(latent_shape(point.model)) == 4)

    SUMS = {"latent": "converged_latent_se", "image": "converged_image_se"}  # part keys of its squared errors

    def interval(self, part: Mapping, row: Mapping, jackknife: Jackknife) -> dict:
        return _paired_interval("converged", self.SUMS, part, row, jackknife.ids)

    def columns(self, part: Mapping, row: Mapping) -> dict[str, np.ndarray]:
        return _squared_errors("converged", self.SUMS, part, row)


@register
class PairedError(Metric):
    """Cached vs uncached on the same seeds and labels: MSE/PSNR on latents and images, from
    per-sample sums of squared errors (any shard split gives the same numbers)."""

    name = "paired_error"
    part_keys = ("latent_se", "reference_latent_range", "image_se")
    directions = {"paired_latent_mse": False, "paired_latent_psnr_db": True, "paired_image_mse": False,
                  "paired_image_psnr_db": True}

    def update(self, batch: Batch) -> Mapping[str, torch.Tensor]:
        twin = batch.reference("uncached")
        if twin is None:
            return {}
        sums = paired_sums(batch.result.latents, batch.images, *twin)
        return {"latent_se": sums["latent_se"], "reference_latent_range": sums["latent_range"],
                "image_se": sums["image_se"]}

    def value(self, part: Mapping, scoring: Scoring, row: Mapping) -> dict:
        if scoring.point.cache is None:
            return {}
        return paired_scores("paired", part["latent_se"], part["image_se"], part["reference_latent_range"],
                             part["latent_numel"], part["image_numel"])

    SUMS = {"latent": "latent_se", "image": "image_se"}  # part keys of its squared errors

    def interval(self, part: Mapping, row: Mapping, jackknife: Jackknife) -> dict:
        return _paired_interval("paired", self.SUMS, part, row, jackknife.ids)

    def columns(self, part: Mapping, row: Mapping) -> dict[str, np.ndarray]:
        return _squared_errors("paired", self.SUMS, part, row)


# Paired fidelity from per-sample sums of squared errors, `sums` {"latent"|"image": part key}, shared
# by the scores against the converged reference and against the uncached twin (row prefix `prefix`).
def _paired_interval(prefix: str, sums: Mapping[str, str], part: Mapping, row: Mapping, ids) -> dict:
    """The MSE/PSNR intervals of `<prefix>_{latent,image}_*` (metrics.intervals.paired_fields); images
    lie in [-1, 1] (peak-to-peak 2), latents have the run's measured range."""
    if part.get(sums["latent"]) is None:
        return {}
    return paired_fields(prefix, row, {space: part[key] for space, key in sums.items()},
                         {space: part[f"{space}_numel"] for space in sums},
                         {"latent": row.get(f"{prefix}_latent_peak_to_peak"), "image": 2.0}, ids)


def _squared_errors(prefix: str, sums: Mapping[str, str], part: Mapping, row: Mapping) -> dict[str, np.ndarray]:
    """Per-sample `<prefix>_<space>_mse` columns, where the row kept that aggregate."""
    return {f"{prefix}_{space}_mse": part[key].double().numpy() / part[f"{space}_numel"]
            for space, key in sums.items() if part.get(key) is not None and row.get(f"{prefix}_{space}_mse") is not None}


@register
class SetQuality(Metric):
    """The set metrics of the run's features against the reference set (FID, KID, precision,
    recall), the Inception Score, the toy classifier's on-class rate and the class flip rate
    against the uncached twin; their intervals: metrics.intervals.quality_fields (which also
    gives the converged metrics' FID/KID intervals)."""

    name = "set_quality"
    part_keys = ("features", "logits", "reference_logits")
    directions = {"fid": False, "sfid": False, "kid": False, "precision": True, "recall": True, "is": True,
                  "on_class_rate": True, "class_flip_rate": False}

    def update(self, batch: Batch) -> Mapping[str, torch.Tensor]:
        features = batch.point.features
        if features is None:
            return {}
        feats, logits = features.embed(batch.images)
        out = {"features": torch.from_numpy(feats)}
        if logits is not None:
            out["logits"] = torch.from_numpy(logits)
        if batch.point.cache is not None and (ref_logits := features.embed(batch.reference("uncached")[1])[1]) is not None:
            out["reference_logits"] = torch.from_numpy(ref_logits)
        return out

    def value(self, part: Mapping, scoring: Scoring, row: Mapping) -> dict:
        from .set_quality import quality_metrics

        return quality_metrics(scoring.point, part, scoring.reference)

    def interval(self, part: Mapping, row: Mapping, jackknife: Jackknife) -> dict:
        if part.get("features") is None:
            return {}
        tensor = part.get("converged_features")
        return quality_fields(
            row, features=part["features"].numpy(), ids=jackknife.ids, labels=part["labels"].numpy(),
            logits=None if part.get("logits") is None else part["logits"].numpy(), reference=jackknife.reference,
            reference_logits=None if part.get("reference_logits") is None else part["reference_logits"].numpy(),
            converged_features=None if tensor is None else tensor.numpy(), k=jackknife.k, device=jackknife.device,
            replicates=jackknife.replicates)

    def columns(self, part: Mapping, row: Mapping) -> dict[str, np.ndarray]:
        logits, out = part.get("logits"), {}
        if logits is not None and row.get("on_class_rate") is not None:
            out["on_class"] = (logits.argmax(1) == part["labels"]).numpy().astype(np.int8)
        if logits is not None and part.get("reference_logits") is not None:
            out["class_flip"] = (logits.argmax(1) != part["reference_logits"].argmax(1)).numpy().astype(np.int8)
        return out


@register
class ClipScore(PerSampleMean):
    """Text-to-image: each image against its own prompt's text (metrics/clip.py)."""

    name = "clip_score"
    part_keys = ("clip_score",)
    bounds = (0.0, 100.0)

    def score(self, batch: Batch) -> torch.Tensor | None:
        point = batch.point
        if point.clip is None:
            return None
        texts = [point.model.prompt_texts[int(label)] for label in batch.result.labels]
        if is_video(batch.images):  # each frame against its video's prompt, averaged per video
            frames = batch.images.shape[2]
            texts = [text for text in texts for _ in range(frames)]
            scores = torch.from_numpy(point.clip.scores(as_frames(batch.images), texts))
            return per_sample_mean(scores, len(batch.images))
        return torch.from_numpy(point.clip.scores(batch.images, texts))

    def value(self, part: Mapping, scoring: Scoring, row: Mapping) -> dict:
        out = super().value(part, scoring, row)
        return {**out, "clip_model": scoring.point.clip.tag} if out else out


class _AgainstReference(PerSampleMean):
    """A per-sample score of each image against its paired reference image (same seed): the
    converged sample or the uncached twin (`prefix`); images only (latents without a VAE: none).
    A video scores frame by frame against the paired video's frame, averaged per video."""

    prefix = ""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.name = f"{prefix}_image_{self.kind}"
        self.requires = "converged_image_mse" if prefix == "converged" else None  # no pairs: a stochastic sampler

    def score(self, batch: Batch) -> torch.Tensor | None:
        reference = batch.reference("uncached" if self.prefix == "paired" else self.prefix)
        if reference is None or batch.images.shape[1] != 3 or not self.available(batch.point):
            return None
        device = batch.point.device  # the run's GPU at paper scale
        images, reference = batch.images, reference[1]
        if is_video(images):  # (N, 3, F, H, W): each frame an image
            scores = self.compare(batch.point, as_frames(images).to(device), as_frames(reference).to(device))
            return per_sample_mean(scores, len(images))
        return self.compare(batch.point, images.to(device), reference.to(device))

    def available(self, point) -> bool:
        return True


class Ssim(_AgainstReference):
    kind, bounds = "ssim", (-1.0, 1.0)

    def compare(self, point, images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        from .perceptual import ssim_per_sample

        return ssim_per_sample(images, reference)


class Lpips(_AgainstReference):
    """LPIPS where metrics.lpips_backbone is set; `lpips_model`, or `lpips_note` where it was skipped."""

    kind, bounds, higher_is_better = "lpips", (0.0, math.inf), False

    def available(self, point) -> bool:
        return point.lpips is not None

    def compare(self, point, images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return point.lpips.scores(images, reference)

    def value(self, part: Mapping, scoring: Scoring, row: Mapping) -> dict:
        out = super().value(part, scoring, row)
        if scoring.point.lpips is not None:
            out["lpips_model"] = scoring.point.lpips.tag
        elif row.get(f"{self.prefix}_image_ssim") is not None:
            out["lpips_note"] = "LPIPS skipped: no local weights (metrics.lpips_backbone)"
        return out


for _prefix in ("converged", "paired"):
    register(Ssim(_prefix))
    register(Lpips(_prefix))
