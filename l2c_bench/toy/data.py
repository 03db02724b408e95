"""A procedural, class-conditional image set for toy-scale benchmarks (3 x 32 x 32, 10 classes).

Each class is a large-scale structure a tiny transformer learns in minutes on a CPU
(stripes, checkerboard, rings, a big disk, colour splits and gradients), drawn in two colours:
a foreground hue near the class's own hue (so colour is a second, redundant cue) and a
random contrasting background. Frequencies, phases, positions and colours vary per image.
Image i of a set with seed s is a pure function of (s, i): the set is unlimited and
reproducible, and any slice of it can be regenerated without the rest.
"""

from __future__ import annotations

import math

import torch

CLASSES = (
    "horizontal_stripes",
    "vertical_stripes",
    "checkerboard",
    "diagonal_stripes",
    "rings",
    "disk",
    "left_right_split",
    "top_bottom_split",
    "radial_gradient",
    "horizontal_gradient",
)
NUM_CLASSES = len(CLASSES)
IMAGE_SIZE = 32


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(N,) hue, saturation, value in [0, 1] -> (N, 3) RGB in [0, 1]."""
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], dim=1)
    return v[:, None] - v[:, None] * s[:, None] * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def _mask_draws(n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Each image's random pattern parameters, (N,) each, in the set's fixed draw order."""
    size = IMAGE_SIZE
    return {"period": 4.0 + 6.0 * torch.rand(n, generator=g),  # stripe period in pixels
            "phase": 2 * math.pi * torch.rand(n, generator=g),
            "cx": size / 2 + 4 * (torch.rand(n, generator=g) - 0.5),
            "cy": size / 2 + 4 * (torch.rand(n, generator=g) - 0.5),
            "radius": 8.0 + 5.0 * torch.rand(n, generator=g),
            "split": size / 2 + 8 * (torch.rand(n, generator=g) - 0.5)}


def _render(labels: torch.Tensor, draws: dict[str, torch.Tensor], dx: torch.Tensor | float = 0.0,
            dy: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Foreground weight in [0, 1] per pixel of each pattern moved by (dx, dy) pixels ((N,) or
    scalars): (N,) labels -> (N, 32, 32). Stripes and rings drift in phase, the disk, the
    splits and the gradients translate (toy/video_data.py's motion)."""
    n, size = len(labels), IMAGE_SIZE
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")  # (32, 32)
    dx, dy = (torch.as_tensor(d, dtype=torch.float32).expand(n)[:, None, None] for d in (dx, dy))
    xx, yy = xx - dx, yy - dy  # (N, 32, 32)
    p, ph = draws["period"][:, None, None], draws["phase"][:, None, None]
    r = torch.sqrt((xx - draws["cx"][:, None, None]) ** 2 + (yy - draws["cy"][:, None, None]) ** 2)  # (N, 32, 32)
    radius, split = draws["radius"][:, None, None], draws["split"][:, None, None]
    square = lambda z: (torch.sin(z) > 0).float()
    candidates = torch.stack([
        square(2 * math.pi * yy / p + ph),
        square(2 * math.pi * xx / p + ph),
        square(2 * math.pi * xx / p + ph) * square(2 * math.pi * yy / p + ph)
        + (1 - square(2 * math.pi * xx / p + ph)) * (1 - square(2 * math.pi * yy / p + ph)),
        square(2 * math.pi * (xx + yy) / (p * 1.41) + ph),
        square(2 * math.pi * r / p + ph),
        (r < radius).float(),
        (xx < split).float(),
        (yy < split).float(),
        torch.clamp(1 - r / (1.2 * radius + 4), 0, 1),
        torch.clamp(xx / size, 0, 1),
    ], dim=1)  # (N, 10, 32, 32)
    return candidates[torch.arange(n), labels]


def _masks(labels: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Foreground weight in [0, 1] per pixel: (N,) labels -> (N, 32, 32)."""
    return _render(labels, _mask_draws(len(labels), g))


def _colours(labels: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3) foreground (near the class's hue) and background colours in [0, 1]."""
    n = len(labels)
    hue = (labels.float() / NUM_CLASSES + 0.04 * (torch.rand(n, generator=g) - 0.5)) % 1.0
    fg = _hsv_to_rgb(hue, 0.65 + 0.35 * torch.rand(n, generator=g), 0.75 + 0.25 * torch.rand(n, generator=g))
    bg = _hsv_to_rgb(torch.rand(n, generator=g), 0.6 * torch.rand(n, generator=g),
                     0.05 + 0.3 * torch.rand(n, generator=g))
    return fg, bg


def make_images(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """Images for the given labels, (N,) -> (N, 3, 32, 32) in [-1, 1], deterministic in (seed, labels)."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    g = torch.Generator().manual_seed(int(seed))
    fg, bg = _colours(labels, g)
    mask = _masks(labels, g)[:, None]  # (N, 1, 32, 32)
    images = mask * fg[:, :, None, None] + (1 - mask) * bg[:, :, None, None]  # (N, 3, 32, 32)
    images = images + 0.03 * torch.randn(images.shape, generator=g)
    return (images * 2 - 1).clamp(-1, 1)


def batch_draw(seed: int, index: int, batch_size: int) -> tuple[torch.Tensor, int]:
    """Batch `index` of a stream with `seed`: its random labels (batch_size,) and the seed its samples
    are drawn with (the image stream's and toy/video_data.py's clip stream's)."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(index))
    labels = torch.randint(0, NUM_CLASSES, (batch_size,), generator=g)
    return labels, int(seed) * 7_919 + int(index) * 104_729 + 1


def make_batch(seed: int, index: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch `index` of the stream with `seed`: balanced random labels and their images."""
    labels, sample_seed = batch_draw(seed, index, batch_size)
    return make_images(labels, seed=sample_seed), labels


def make_dataset(num_images: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, class-balanced set: labels cycle 0..9; (N, 3, 32, 32) in [-1, 1] and (N,)."""
    labels = torch.arange(num_images) % NUM_CLASSES
    return make_images(labels, seed=seed), labels
