"""Toy-scale feature network: the shipped classifier, and reference statistics of the toy set."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..models.checkpoint import read_state_dict
from ..toy.classifier import ToyClassifier

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
