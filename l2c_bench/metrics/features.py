"""Feature networks behind the quality metrics, and their reference sets.

`feature_net("toy" | "inception", device)` -> an object with `.name`, `.tag` (what made the
features: cache keys) and `.embed(images (N, 3, H, W) in [-1, 1]) -> (features (N, D), logits
(N, K) or None)`, float64 numpy.

Reference features (the real-data side of FID/KID/precision/recall), computed once and cached
in `<results_dir>/_reference/`, keyed by the network tag and what made the set:
- toy scale: `num_images` images of the procedural set (fixed seed, disjoint from training),
  unless `metrics.reference` names another;
- a text-to-image run's prompt set with images (models/zoo/prompt_sets.py): those images, as a
  list of files, unless `metrics.reference` names another;
- paper scale: `metrics.reference`, one of
  * an `.npz` in ADM's format (`VIRTUAL_imagenet256_labeled.npz`: stored `mu`/`sigma`, used as
    they are for FID, and `arr_0` uint8 images (N, H, W, 3), embedded for KID and
    precision/recall) or with a `features` array (N, D);
  * a folder of images (png/jpg/jpeg/webp, read in name order), embedded once;
  * `cleanfid:<name>/<split>/<res>`, clean-fid's precomputed statistics (e.g.
    `cleanfid:imagenet/train/256`), read from clean-fid's own stats folder (and its `_kid`
    features when present); offline, put the files there, the error says which.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..models.loading import file_sha256
from ..system.files import atomic_path
from .quality import feature_statistics

REFERENCE_SEED = 1_000_000  # the toy reference images: disjoint from the training streams' seeds


class ReferenceMissing(ValueError):
    """Paper-scale quality without `metrics.reference`."""


class ToyNet:
    name = "toy"

    @property
    def tag(self) -> str:
        from .toy_features import classifier_hash

        return f"toy-{classifier_hash()}"

    def embed(self, images: torch.Tensor):
        from .toy_features import toy_features

        return toy_features(images)


class InceptionNet:
    name = "inception"

    def __init__(self, device: torch.device, mode: str = "clean"):
        from .inception import Inception

        self.net = Inception(device, mode)

    @property
    def tag(self) -> str:
        return self.net.tag

    @property
    def mode(self) -> str:
        return self.net.mode

    def embed(self, images: torch.Tensor):
        return self.net.features(images), self.net.logits(images)


def feature_net(name: str, device: torch.device, mode: str = "clean"):
    if name == "toy":
        return ToyNet()
    if name == "inception":
        return InceptionNet(device, mode)
    raise ValueError(f"scale.features={name!r} is unknown; valid: toy, inception")


@dataclass
class Reference:
    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray | None  # None: stored statistics only (no KID / precision / recall)
    origin: str


def _cached(path: Path, compute) -> np.ndarray:
    if path.is_file():
        with np.load(path) as data:
            return data["features"]
    features = compute()
    with atomic_path(path) as tmp:  # concurrent runs may both compute it; each rename is whole
        with open(tmp, "wb") as fh:
            np.savez(fh, features=features)
    return features


def locate_reference(reference: str, features: str, mode: str = "clean") -> Path:
    """The file or folder `metrics.reference` names, or an error naming the key (runs/prepare.py calls this
    before any sampling; `reference_set` through it)."""
    if reference.startswith("cleanfid:"):
        if features != "inception":
            raise ValueError(f"metrics.reference={reference}: clean-fid's statistics are Inception statistics; "
                             f"they need scale.features=inception")
        return _cleanfid_path(reference, mode)
    path = Path(reference)
    if not path.exists():
        raise FileNotFoundError(f"reference not found: {path} (set by config key `metrics.reference`)")
    return path


def reference_set(net, *, scale: str, num_images: int, reference: str | list[Path] | None,
                  cache_dir: str | os.PathLike) -> Reference:
    cache_dir = Path(cache_dir)
    if isinstance(reference, list):  # image files (a prompt set's)
        return _images(net, reference, cache_dir, "prompt set")
    if scale == "toy" and not reference:
        from ..toy.data import make_dataset

        features = _cached(cache_dir / f"ref_{net.tag}_toyset_n{num_images}_s{REFERENCE_SEED}.npz",
                           lambda: net.embed(make_dataset(num_images, seed=REFERENCE_SEED)[0])[0])
        return Reference(*feature_statistics(features), features, f"toy set, {num_images} images")
    if not reference:
        raise ReferenceMissing("paper-scale FID/KID/precision/recall need metrics.reference: ADM's reference batch "
                               "(VIRTUAL_imagenet256_labeled.npz) or an .npz with `features`")
    located = locate_reference(reference, net.name, getattr(net, "mode", "clean"))
    if reference.startswith("cleanfid:"):
        return _cleanfid_statistics(located)
    path = located
    if path.is_dir():
        return _folder(net, path, cache_dir)
    with np.load(path) as data:
        keys = set(data.files)
        stored = (data["mu"], data["sigma"]) if {"mu", "sigma"} <= keys else None
        if "features" in keys:
            features = data["features"].astype(np.float64)
        elif "arr_0" in keys:
            digest = file_sha256(path)[:12]  # streamed and memoised: ADM's batch is ~1.4 GB

            def compute():
                images = torch.from_numpy(data["arr_0"]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
                return net.embed(images)[0]

            features = _cached(cache_dir / f"ref_{net.tag}_{path.stem}_{digest}.npz", compute)
        else:
            features = None
    if stored is None and features is None:
        raise ValueError(f"metrics.reference={path}: needs `mu`+`sigma`, `features` or `arr_0` images")
    mu, sigma = stored if stored is not None else feature_statistics(features)
    return Reference(np.asarray(mu, np.float64), np.asarray(sigma, np.float64), features, str(path))


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


def _folder(net, folder: Path, cache_dir: Path) -> Reference:
    """Every image of a folder (name order), embedded once."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < 2:
        raise ValueError(f"metrics.reference={folder}: needs at least 2 images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return _images(net, files, cache_dir, folder.name, str(folder))


def _images(net, files: list[Path], cache_dir: Path, name: str, origin: str | None = None) -> Reference:
    """Image files embedded once, cached by their listing (paths, sizes, mtimes)."""
    from PIL import Image

    if len(files) < 2:
        raise ValueError(f"a reference set of {len(files)} image: FID/KID need at least 2")
    listing = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    digest = hashlib.sha1(repr(listing).encode()).hexdigest()[:12]

    def compute():
        features = []
        for path in files:  # one at a time: a folder may mix image sizes
            array = np.array(Image.open(path).convert("RGB"))  # a writable copy for torch
            image = torch.from_numpy(array).permute(2, 0, 1)[None].float() / 127.5 - 1.0
            features.append(net.embed(image)[0])
        return np.concatenate(features)

    features = _cached(cache_dir / f"ref_{net.tag}_{name.replace(' ', '_')}_{digest}.npz", compute)
    origin = origin or f"{name}: {files[0].parent}"
    return Reference(*feature_statistics(features), features, f"{origin} ({len(files)} images)")


def _cleanfid_path(spec: str, mode: str) -> Path:
    """`cleanfid:<name>/<split>/<res>` -> clean-fid's stats file in its package folder (no download)."""
    import cleanfid

    try:
        name, split, res = spec.removeprefix("cleanfid:").split("/")
    except ValueError:
        raise ValueError(f"metrics.reference={spec!r}: write cleanfid:<name>/<split>/<res>, e.g. "
                         f"cleanfid:imagenet/train/256") from None
    folder = Path(cleanfid.__file__).parent / "stats"
    stem = f"{name}_{mode}_{split}_{'na' if split == 'custom' else res}".lower()
    path = folder / f"{stem}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"metrics.reference={spec}: clean-fid's statistics are not on disk; put "
                                f"https://www.cs.cmu.edu/~clean-fid/stats/{path.name} at {path}")
    return path


def _cleanfid_statistics(path: Path) -> Reference:
    """clean-fid's statistics (and its `_kid` features when present) from `path`."""
    with np.load(path) as data:
        mu, sigma = data["mu"], data["sigma"]
    kid_path = path.with_name(f"{path.stem}_kid.npz")
    features = None
    if kid_path.is_file():
        with np.load(kid_path) as data:
            features = data["feats"].astype(np.float64)
    return Reference(np.asarray(mu, np.float64), np.asarray(sigma, np.float64), features, f"clean-fid {path.stem}")
