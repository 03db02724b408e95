"""Procedural, class-conditional video clips for the toy video models (3 x F x 32 x 32, 10 classes).

A clip of class c is toy/data.py's procedural image of class c moving over its F frames: the
pattern translates at a constant velocity, 1.5 to 3 pixels a frame in a random direction (stripes,
checkerboard and rings drift in phase, the disk, the splits and the gradients move), in colours
fixed for the clip, with fresh pixel noise per frame. Clip i of a set with seed s is a pure
function of (s, i), as for the images.
"""

from __future__ import annotations

import math

import torch

from .data import IMAGE_SIZE, _colours, _mask_draws, _render, batch_draw

FRAMES = 3  # the toy video models' frames (models.zoo.TOY_FRAMES; tests check they agree)


def make_clips(labels: torch.Tensor, seed: int, frames: int = FRAMES, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Clips for the given labels, (N,) -> (N, 3, F, size, size) in [-1, 1], deterministic in (seed,
    labels); `size` below 32 average-pools the 32 x 32 frames (a divisor of 32: LTX-Video's 8)."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    g = torch.Generator().manual_seed(int(seed))
    n = len(labels)
    fg, bg = _colours(labels, g)
    draws = _mask_draws(n, g)
    speed = 1.5 + 1.5 * torch.rand(n, generator=g)  # pixels a frame
    angle = 2 * math.pi * torch.rand(n, generator=g)
    start = -(frames - 1) / 2  # centred: the middle frame is the still image's pattern
    masks = torch.stack([_render(labels, draws, (start + f) * speed * torch.cos(angle),
                                 (start + f) * speed * torch.sin(angle)) for f in range(frames)], dim=1)
    clips = masks[:, None] * fg[:, :, None, None, None] + (1 - masks[:, None]) * bg[:, :, None, None, None]
    clips = clips + 0.03 * torch.randn(clips.shape, generator=g)  # (N, 3, F, 32, 32)
    clips = (clips * 2 - 1).clamp(-1, 1)
    if size != IMAGE_SIZE:
        if IMAGE_SIZE % size:
            raise ValueError(f"clip size {size} must divide {IMAGE_SIZE}")
        clips = torch.nn.functional.avg_pool3d(clips, (1, IMAGE_SIZE // size, IMAGE_SIZE // size))
    return clips


def make_clip_batch(seed: int, index: int, batch_size: int, frames: int = FRAMES,
                    size: int = IMAGE_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch `index` of the clip stream with `seed`: balanced random labels and their clips."""
    labels, sample_seed = batch_draw(seed, index, batch_size)
    return make_clips(labels, sample_seed, frames, size), labels
