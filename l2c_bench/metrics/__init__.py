"""Metrics: pure functions of features/statistics, and the one timing helper."""

from .quality import (
    feature_statistics,
    fid_from_statistics,
    inception_score,
    kid,
    on_class_rate,
    per_class_rate,
    precision_recall,
)
from .timing import Timing, cuda_event_timer, device_sync, measure

__all__ = [
    "Timing",
    "cuda_event_timer",
    "device_sync",
    "feature_statistics",
    "fid_from_statistics",
    "inception_score",
    "kid",
    "measure",
    "on_class_rate",
    "per_class_rate",
    "precision_recall",
]
