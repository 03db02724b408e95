"""Videos as frames, for the metrics and the sample grid: pure functions of (N, C, F, H, W) tensors
(a video model's latents or decoded videos; images are (N, C, H, W)).

- `as_frames`: each frame an image (N * F, C, H, W), sample-major, so an image metric scores a
  video per frame and `per_sample_mean` averages its frames back to one value per sample;
- `frame_psnr`: per sample, the mean over frames of each frame's PSNR against the paired video's
  same frame;
- `temporal_change`: per sample, the mean |frame f+1 - frame f| over its consecutive frames;
- `filmstrip`: a video's frames side by side (N, C, H, F * W), the sample grid's picture.
"""

from __future__ import annotations

import torch


def is_video(x: torch.Tensor) -> bool:
    return x.ndim == 5


def as_frames(video: torch.Tensor) -> torch.Tensor:
    """(N, C, F, H, W) -> (N * F, C, H, W): sample 0's frames first."""
    return video.transpose(1, 2).flatten(0, 1)


def per_sample_mean(per_frame: torch.Tensor, samples: int) -> torch.Tensor:
    """(N * F,) values of `as_frames`' images -> (N,) each sample's mean over its frames."""
    return per_frame.reshape(samples, -1).mean(1)


def frame_psnr(video: torch.Tensor, reference: torch.Tensor, peak_to_peak: float = 2.0) -> torch.Tensor:
    """(N,) mean over frames of 10 log10(peak^2 / MSE(frame, reference frame)), float64; a frame
    equal to its reference is inf (so is then its sample's mean). Images in [-1, 1]: peak 2."""
    if video.shape != reference.shape or not is_video(video):
        raise ValueError(f"paired videos (N, C, F, H, W) of one shape, got {tuple(video.shape)} and "
                         f"{tuple(reference.shape)}")
    error = (video.double() - reference.double()).pow(2).transpose(1, 2).flatten(2).mean(2)  # (N, F)
    return (10 * torch.log10(peak_to_peak**2 / error)).mean(1)  # error 0: inf


def temporal_change(video: torch.Tensor) -> torch.Tensor:
    """(N,) mean |x[:, :, f + 1] - x[:, :, f]| over the consecutive frames and elements, float64."""
    if not is_video(video) or video.shape[2] < 2:
        raise ValueError(f"temporal change needs videos (N, C, F >= 2, H, W), got {tuple(video.shape)}")
    return video.double().diff(dim=2).abs().flatten(1).mean(1)


def filmstrip(video: torch.Tensor) -> torch.Tensor:
    """(N, C, F, H, W) -> (N, C, H, F * W): the frames left to right; images pass unchanged."""
    if not is_video(video):
        return video
    n, c, f, h, w = video.shape
    return video.permute(0, 1, 3, 2, 4).reshape(n, c, h, f * w)
