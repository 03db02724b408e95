"""Training data for router learning, as an endless, resumable stream of (x0, labels) batches.

Step `step` draws one global batch, a pure function of (seed, step); data-parallel rank r of
w takes its r-th slice. A resumed run sees exactly the batches it would have seen without the
interruption, and w ranks together see exactly the batch one process would.

- `toy`: the procedural set (pixel space, what the toy models were trained on).
- a folder of class sub-folders (ImageNet `train/`): ADM centre crop to the model's image size,
  random flip, encoded with the SD VAE on the fly (a latent sample, scaled by 0.18215).
- a `.pt` / `.npz` file with `latents` (N, C, H, W) (already scaled) and `labels` (N,).
- `samples`: the model's own uncached samples (its family's ODE sampler at 50 NFE, unguided), for
  models with no data set at toy scale (the text-to-image classes of model=diffusers). The
  objective matches the frozen model's own outputs, so data only place the training points on
  the sampler's path; the model's samples put them where its trajectories run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from .....engine.model import latent_shape


class RouterDataError(ValueError):
    """Missing or malformed training data (raised before any training)."""


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """An independent CPU generator per (seed, step, stream)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 7 + stream)


def rank_slice(batch: int, rank: int) -> slice:
    """Rank `rank`'s share of a global batch, `batch` samples per rank."""
    return slice(rank * batch, (rank + 1) * batch)


class ToyData:
    def __init__(self, seed: int):
        self.seed = seed

    def batches(self, start: int, batch: int, rank: int, world: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from .....toy.data import make_batch

        step = start
        while True:
            images, labels = make_batch(self.seed, step, batch * world)
            yield images[rank_slice(batch, rank)], labels[rank_slice(batch, rank)]
            step += 1


class LatentPool:
    """Latents (N, C, H, W) and labels (N,) in memory; step `step` draws a global batch from them
    with replacement, a pure function of (seed, step)."""

    latents: torch.Tensor
    labels: torch.Tensor
    seed: int

    def batches(self, start, batch, rank, world):
        step = start
        while True:
            idx = torch.randint(len(self.latents), (batch * world,), generator=step_generator(self.seed, step))
            idx = idx[rank_slice(batch, rank)]
            yield self.latents[idx], self.labels[idx]
            step += 1


class LatentFile(LatentPool):
    def __init__(self, path: Path, seed: int, shape: tuple[int, ...]):  # (C, H, W); video (C, F, H, W)
        if path.suffix == ".npz":
            with np.load(path) as f:
                if "latents" not in f or "labels" not in f:
                    raise RouterDataError(f"router.data={path}: an .npz needs arrays `latents` and `labels`")
                latents, labels = torch.from_numpy(f["latents"]), torch.from_numpy(f["labels"])
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(obj, dict) or "latents" not in obj or "labels" not in obj:
                raise RouterDataError(f"router.data={path}: a .pt file needs a dict with `latents` and `labels`")
            latents, labels = obj["latents"], obj["labels"]
        if tuple(latents.shape[1:]) != shape or len(labels) != len(latents):
            raise RouterDataError(f"router.data={path}: latents {tuple(latents.shape)} / labels {len(labels)} do "
                                  f"not fit the model's input (N, {', '.join(map(str, shape))})")
        self.latents, self.labels, self.seed = latents.float(), labels.long(), seed


def center_crop(image, size: int):
    """ADM centre crop: halve with BOX while the short side >= 2*size, BICUBIC resize, crop."""
    from PIL import Image

    while min(image.size) >= 2 * size:
        image = image.resize(tuple(s // 2 for s in image.size), resample=Image.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(s * scale) for s in image.size), resample=Image.BICUBIC)
    left, top = (image.size[0] - size) // 2, (image.size[1] - size) // 2
    return image.crop((left, top, left + size, top + size))


class _Images(torch.utils.data.Dataset):
    def __init__(self, folder: Path, size: int, seed: int):
        from torchvision.datasets import ImageFolder

        self.folder, self.size, self.seed = ImageFolder(str(folder)), size, seed

    def __len__(self):
        return len(self.folder)

    def __getitem__(self, item):
        index, flip = item
        image, label = self.folder[index]
        x = torch.from_numpy(np.asarray(center_crop(image.convert("RGB"), self.size))).permute(2, 0, 1)
        x = x.float() / 127.5 - 1.0  # (3, size, size) in [-1, 1]
        return (x.flip(-1) if flip else x), label


class _StepBatches(torch.utils.data.Sampler):
    """Per step: this rank's slice of the global batch of (index, flip) pairs."""

    def __init__(self, n: int, start: int, batch: int, rank: int, world: int, seed: int):
        self.n, self.start, self.batch, self.rank, self.world, self.seed = n, start, batch, rank, world, seed

    def __iter__(self):
        step, total, part = self.start, self.batch * self.world, rank_slice(self.batch, self.rank)
        while True:
            g = step_generator(self.seed, step)
            idx, flip = torch.randint(self.n, (total,), generator=g), torch.rand(total, generator=g) < 0.5
            yield list(zip(idx[part].tolist(), flip[part].tolist(), strict=True))
            step += 1


class ImageFolderData:
    def __init__(self, folder: Path, seed: int, image_size: int, vae, num_workers: int):
        if vae is None:
            raise RouterDataError("router.data is an image folder but the model has no VAE (model.vae=none)")
        self.images = _Images(folder, image_size, seed)
        if len(self.images) == 0:
            raise RouterDataError(f"router.data={folder} holds no images")
        self.vae, self.seed, self.num_workers = vae, seed, num_workers

    def batches(self, start, batch, rank, world):
        from .....models.vae import encode_images

        loader = torch.utils.data.DataLoader(
            self.images, batch_sampler=_StepBatches(len(self.images), start, batch, rank, world, self.seed),
            num_workers=self.num_workers, pin_memory=torch.cuda.is_available())
        device = next(self.vae.parameters()).device
        for step, (x, labels) in enumerate(loader, start):
            with torch.no_grad():
                # the VAE's posterior sample: seeded on CPU; on GPU from the device's own stream
                z = encode_images(self.vae, x.to(device),
                                  generator=step_generator(self.seed, step * 1_009 + rank, 1) if device.type == "cpu" else None)
            yield z, labels


class ModelSamples(LatentPool):
    """A pool of the model's own samples, drawn from like a latent file (see the module docstring)."""

    POOL = 256
    NFE = 50

    def __init__(self, model, seed: int):
        from .....pipeline import generate
        from .....sampling import DEFAULT_SAMPLERS, GUIDANCE_OFF

        labels = [i % model.num_classes for i in range(self.POOL)]
        seeds = [seed * 100_003 + 50_000 + i for i in range(self.POOL)]  # away from the runs' seeds
        result = generate(model, labels=labels, seeds=seeds, steps=self.NFE, sampler=DEFAULT_SAMPLERS[model.family],
                          guidance_scale=GUIDANCE_OFF[model.family], batch_size=64)
        self.latents, self.labels, self.seed = result.latents.cpu(), result.labels.cpu(), seed


def make_data(spec: str | None, *, seed: int, model, vae=None, num_workers: int = 2):
    """`toy`, `samples`, a folder of class folders, or a latent file; anything else is a clear error."""
    if not spec:
        raise RouterDataError("router.data is not set: give an ImageNet train/ folder (class sub-folders) "
                              "or a .pt/.npz file of VAE latents and labels")
    if spec == "toy":
        if model.input_size != 32 or model.in_channels != 3:
            raise RouterDataError("router.data=toy is the 3x32x32 procedural set of the toy models; "
                                  "paper-scale models need an ImageNet train/ folder or a latent file")
        return ToyData(seed)
    if spec == "samples":
        return ModelSamples(model, seed)
    path = Path(spec).expanduser()
    if not path.exists():
        raise RouterDataError(f"router.data={spec}: no such file or folder (give an ImageNet train/ folder "
                              f"or a .pt/.npz latent file)")
    if path.is_dir():
        return ImageFolderData(path, seed, model.input_size * 8, vae, num_workers)
    if path.suffix not in (".pt", ".npz"):
        raise RouterDataError(f"router.data={spec}: a latent file must be .pt or .npz")
    return LatentFile(path, seed, latent_shape(model))
