"""Metric columns in the paper's units, and their direction (stored once)."""

from __future__ import annotations

# paper column -> (our row column, factor to the paper's unit, higher is better, label)
METRICS: dict[str, tuple[str, float, bool, str]] = {
    "macs_t": ("metrics.macs_g", 1e-3, False, "MACs (T)"),
    "latency_s": ("metrics.latency_ms", 1e-3, False, "Latency (s)"),
    "speedup": ("metrics.speedup", 1.0, True, "Speedup"),
    "is": ("metrics.is", 1.0, True, "IS"),
    "fid": ("metrics.fid", 1.0, False, "FID"),
    "sfid": ("metrics.sfid", 1.0, False, "sFID"),
    "precision": ("metrics.precision", 100.0, True, "Precision (%)"),
    "recall": ("metrics.recall", 100.0, True, "Recall (%)"),
    "kid": ("metrics.kid", 1.0, False, "KID"),
    "remove_ratio": ("metrics.cached_ratio", 1.0, True, "Cached ratio"),
    "cached_branches": ("cached_branches", 1.0, True, "Cached branches"),
}


def arrow(metric: str) -> str:
    return "↑" if METRICS[metric][2] else "↓"


def higher_is_better(metric: str) -> bool:
    return METRICS[metric][2]
