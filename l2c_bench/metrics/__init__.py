"""Metrics: pure functions of features/statistics, and the one timing helper."""

from .quality import feature_statistics, fid_from_statistics, on_class_rate, per_class_rate
from .timing import Timing, device_sync, measure

__all__ = [
           "Timing",
           "device_sync",
           "feature_statistics",
           "fid_from_statistics",
           "measure",
           "on_class_rate",
           "per_class_rate",
]
