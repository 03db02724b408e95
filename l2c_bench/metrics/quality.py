"""Quality metrics as pure functions of features, logits or statistics.

FID goes through clean-fid's own Frechet distance (`cleanfid.fid.frechet_distance`).
"""

from __future__ import annotations

import numpy as np


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features -> mean (D,) and covariance (D, D), float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need (N >= 2, D) features for statistics, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def fid_from_statistics(mu1, sigma1, mu2, sigma2) -> float:
    from cleanfid.fid import frechet_distance

    return float(frechet_distance(mu1, sigma1, mu2, sigma2))


def on_class_rate(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose predicted class is their conditioning label."""
    return float((np.asarray(logits).argmax(axis=1) == np.asarray(labels)).mean())


def per_class_rate(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float | None]:
    predictions = np.asarray(logits).argmax(axis=1)
    labels = np.asarray(labels)
    return [float((predictions[labels == c] == c).mean()) if (labels == c).any() else None
            for c in range(num_classes)]


def mse(a, b) -> float:
    """Mean squared error between two paired tensors/arrays of the same shape."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in shape: {a.shape} vs {b.shape}")
    return float(np.mean((a - b) ** 2))


def psnr(a, b, peak_to_peak: float) -> float:
    """Peak signal-to-noise ratio in dB; inf for identical inputs."""
    error = mse(a, b)
    return float("inf") if error == 0 else float(10 * np.log10(peak_to_peak**2 / error))
