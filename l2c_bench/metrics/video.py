"""Video metrics (a video model's samples: (N, C, F, H, W); docs/diffusers.md, "Video"), registered
after the image ones (metrics/registry.py):

- `paired_frame_psnr_db`: each video against its uncached twin (same seed, prompt, guidance),
  frame by frame: the mean over its frames of each frame's PSNR (images in [-1, 1], peak 2), then
  the run's mean with its jackknife interval. Without a VAE the "images" are the latents clamped
  to [-1, 1], as for the toy image classes' paired image PSNR.
- `converged_frame_psnr_db`: the same per-frame PSNR against the converged reference video
  (metrics/converged.py: the family's ODE sampler at metrics.converged_nfe, uncached, same seed),
  where the weights are trained (the shipped Wan, LTX toys; random weights have no reference): the
  headline quality of a toy video row (converged.TOY_PRIMARY_QUALITY_VIDEO). The converged
  metric's whole-video MSE/PSNR and SSIM come with it; FID/KID vs converged need a video network.
- `temporal_change_ratio`: how much the cached video moves between consecutive frames relative to
  its uncached twin: mean |frame f+1 - frame f| of the cached video over the twin's, per sample,
  then the run's mean. 1 = the twin's motion; above 1 the cache adds flicker, below it freezes
  motion. Not ranked (no direction: neither way is better), reported beside the PSNR.
- `video_note`: which image metrics a video row leaves out and why (the set metrics score images
  with an image network; runs/prepare.py loads none for video).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from ..engine.model import latent_shape
from .frames import frame_psnr, is_video, temporal_change
from .registry import Batch, Metric, PerSampleMean, Scoring, register

VIDEO_NOTE = ("video: FID, KID, IS, precision/recall, class accuracy, FID/KID vs converged are image-set metrics (an "
              "image network's features), skipped; per frame: paired_frame_psnr_db, SSIM and LPIPS (each frame an "
              "image, averaged per video), CLIP score (mean over frames); with trained weights also "
              "converged_frame_psnr_db and the converged MSE/PSNR/SSIM (random weights: no converged reference); "
              "temporal_change_ratio")


def _paired_videos(batch: Batch) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The batch's videos and their uncached twins' (N, C, F, H, W), or None (images, an uncached run)."""
    if not is_video(batch.images):
        return None
    twin = batch.reference("uncached")
    return None if twin is None else (batch.images, twin[1])


@register
class PairedFramePsnr(PerSampleMean):
    """Per video, the mean over frames of each frame's PSNR against the uncached twin's frame (dB)."""

    name = "paired_frame_psnr_db"
    part_keys = ("paired_frame_psnr_db",)
    bounds = (0.0, math.inf)  # frames in [-1, 1]: the squared error is at most 4 = peak^2

    def score(self, batch: Batch) -> torch.Tensor | None:
        pair = _paired_videos(batch)
        return None if pair is None else frame_psnr(*pair)


@register
class ConvergedFramePsnr(PerSampleMean):
    """Per video, the mean over frames of each frame's PSNR against the converged reference's frame
    (dB); only where the converged reference is on and paired (a deterministic sampler)."""

    name = "converged_frame_psnr_db"
    part_keys = ("converged_frame_psnr_db",)
    bounds = (0.0, math.inf)
    requires = "converged_image_mse"  # None on a stochastic sampler's row: no seed-by-seed pairs

    def score(self, batch: Batch) -> torch.Tensor | None:
        if not is_video(batch.images):
            return None
        converged = batch.reference("converged")
        return None if converged is None else frame_psnr(batch.images, converged[1])


@register
class TemporalChangeRatio(PerSampleMean):
    """Per video, its mean change between consecutive frames over its uncached twin's (1 = same)."""

    name = "temporal_change_ratio"
    part_keys = ("temporal_change_ratio",)
    bounds = (0.0, math.inf)

    @property
    def directions(self) -> Mapping[str, bool]:
        return {}  # 1 is the twin's motion; more (flicker) and less (frozen) are both departures

    def score(self, batch: Batch) -> torch.Tensor | None:
        pair = _paired_videos(batch)
        if pair is None or pair[0].shape[2] < 2:  # one frame: no motion to compare
            return None
        cached, twin = (temporal_change(v) for v in pair)
        return cached / twin  # a still twin (0): inf or nan, and the run's mean says so


@register
class VideoNote(Metric):
    """`video_note` on the rows of a video model: the image metrics it leaves out, and why."""

    name = "video_note"

    def value(self, part: Mapping, scoring: Scoring, row: Mapping) -> dict:
        return {"video_note": VIDEO_NOTE} if len(latent_shape(scoring.point.model)) == 4 else {}
