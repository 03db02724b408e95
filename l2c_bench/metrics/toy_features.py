"""Toy-scale feature network: the shipped classifier (features and logits) and its content hash."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..models.checkpoint import read_state_dict
from ..toy.classifier import ToyClassifier

CLASSIFIER_ASSET = Path(__file__).resolve().parents[1] / "toy" / "assets" / "classifier_toy.pt"


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


@lru_cache(maxsize=1)
def classifier_hash() -> str:
    """What made the toy features (reference caches are keyed by it); read once per process."""
    return hashlib.sha1(CLASSIFIER_ASSET.read_bytes()).hexdigest()[:10]
