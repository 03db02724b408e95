"""Toy-scale feature network: the shipped classifier, and reference statistics of the toy set."""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_path
from ..models.checkpoint import read_state_dict
from ..toy.classifier import ToyClassifier
from ..toy.data import make_dataset
from .quality import feature_statistics

CLASSIFIER_ASSET = Path(__file__).resolve().parents[1] / "toy" / "assets" / "classifier_toy.pt"
REFERENCE_SEED = 1_000_000  # disjoint from the training streams' seeds


@lru_cache(maxsize=1)
def load_toy_classifier(path: str = str(CLASSIFIER_ASSET)) -> ToyClassifier:
    net = ToyClassifier()
    net.load_state_dict(read_state_dict(path, config_key="(shipped toy classifier)"))
    return net.eval()


@torch.no_grad()
def toy_features(images: torch.Tensor, batch_size: int = 250) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3, 32, 32) images in [-1, 1] -> features (N, 128) and logits (N, 10), float64."""
    net = load_toy_classifier()
    feats, logits = [], []
    for chunk in images.float().cpu().split(batch_size):
        f = net.features(chunk)
        feats.append(f)
        logits.append(net.head(f))
    return torch.cat(feats).double().numpy(), torch.cat(logits).double().numpy()


def _asset_hash() -> str:
    return hashlib.sha1(CLASSIFIER_ASSET.read_bytes()).hexdigest()[:10]


def toy_reference_statistics(num_images: int, cache_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """mu, sigma of the toy set's features; computed once, cached keyed by what made them."""
    cache = Path(cache_dir) / f"toy_ref_{_asset_hash()}_n{num_images}_s{REFERENCE_SEED}.npz"
    if cache.is_file():
        with np.load(cache) as data:
            return data["mu"], data["sigma"]
    images, _ = make_dataset(num_images, seed=REFERENCE_SEED)
    mu, sigma = feature_statistics(toy_features(images)[0])
    with atomic_path(cache) as tmp:  # concurrent runs may both compute it; each rename is whole
        with open(tmp, "wb") as fh:
            np.savez(fh, mu=mu, sigma=sigma)
    return mu, sigma
