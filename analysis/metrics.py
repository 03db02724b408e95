"""Metric columns in the paper's units, their direction and whether they are measured (stored once)."""

from __future__ import annotations

import math

from l2c_bench.metrics import registry

# paper column (or ours beyond the paper) -> (our row column, factor to the paper's unit, label);
# whether higher is better is the registered metric's (l2c_bench.metrics.registry)
_COLUMNS: dict[str, tuple[str, float, str]] = {
    "macs_t": ("metrics.macs_g", 1e-3, "MACs (T)"),
    "latency_s": ("metrics.latency_ms", 1e-3, "Latency (s)"),
    "speedup": ("metrics.speedup", 1.0, "Speedup"),
    "is": ("metrics.is", 1.0, "IS"),
    "fid": ("metrics.fid", 1.0, "FID"),
    "sfid": ("metrics.sfid", 1.0, "sFID"),
    "precision": ("metrics.precision", 100.0, "Precision (%)"),
    "recall": ("metrics.recall", 100.0, "Recall (%)"),
    "kid": ("metrics.kid", 1.0, "KID"),
    "remove_ratio": ("metrics.cached_ratio", 1.0, "Cached ratio"),
    "cached_branches": ("cached_branches", 1.0, "Cached branches"),
    "paired_psnr_db": ("metrics.paired_image_psnr_db", 1.0, "Paired PSNR (dB)"),
    # the toy scale's primary quality axis (l2c_bench/metrics/converged.py, docs/metrics.md)
    "converged_psnr_db": ("metrics.converged_image_psnr_db", 1.0, "Image PSNR vs converged (dB)"),
    # ... a toy video's: per video, the mean over frames of each frame's PSNR (metrics/video.py)
    "converged_frame_psnr_db": ("metrics.converged_frame_psnr_db", 1.0, "Frame PSNR vs converged (dB)"),
    # rows without image metrics (random weights, latents without a VAE): fidelity to the uncached twin
    "paired_latent_psnr_db": ("metrics.paired_latent_psnr_db", 1.0, "Latent PSNR vs uncached (dB)"),
}
# counted here from the row's schedule (analysis.tables), not a row metric: more cached branches is better
_NOT_ROW_METRICS = {"cached_branches": True}
# paper column -> (our column, factor to the paper's unit, higher is better, label)
METRICS: dict[str, tuple[str, float, bool, str]] = {
    name: (column, factor, _NOT_ROW_METRICS[column] if column in _NOT_ROW_METRICS
           else registry.higher_is_better(column), label)
    for name, (column, factor, label) in _COLUMNS.items()}

# metrics.primary_quality (a row key) -> the METRICS column plotted for it
PRIMARY_COLUMNS = {"converged_image_psnr_db": "converged_psnr_db", "fid": "fid",
                   "paired_latent_psnr_db": "paired_latent_psnr_db",
                   "converged_frame_psnr_db": "converged_frame_psnr_db"}
# axes measured against each row's own uncached twin: the uncached row is their reference (no value)
PAIRED_AXES = {"paired_latent_psnr_db"}


def quality_column(points) -> str:
    """The quality column to rank paper_frame `points` on: their primary axis
    (`metrics.primary_quality`) where every point has it, else FID."""
    named = {PRIMARY_COLUMNS.get(p) for p in points["primary_quality"]} if "primary_quality" in points else set()
    column = named.pop() if len(named) == 1 else "fid"
    return column if column and points[column].notna().all() else "fid"

# Counted from the schedule, not measured: exact, so shown without an interval (analysis.uncertainty).
EXACT = {"macs_t", "remove_ratio", "cached_branches"}


def arrow(metric: str) -> str:
    return "↑" if METRICS[metric][2] else "↓"


def higher_is_better(metric: str) -> bool:
    return METRICS[metric][2]


# MACs are tabulated in T, the paper's unit, and shown in the largest of these units in which the
# largest value is at least 1: T at paper scale, G or M for the toy models (not "0.0006 T").
MACS_UNITS = (("T", 1.0), ("G", 1e3), ("M", 1e6))  # (unit, factor from T)


def macs_unit(values_t) -> tuple[str, float]:
    """The unit (T, G or M) to show MACs given in T, and the factor from T to it, from the largest
    value (None and NaN left out; none left: T). Every table and plot that shows MACs uses it."""
    finite = [abs(float(v)) for v in values_t if v is not None and not math.isnan(float(v))]
    largest = max(finite, default=math.inf)
    for unit, factor in MACS_UNITS:
        if largest * factor >= 1:
            return unit, factor
    return MACS_UNITS[-1]


def shown(metric: str, values) -> tuple[str, float]:
    """The label a table shows `metric` under and the factor from its unit here to the one shown:
    MACs in the unit their size calls for (macs_unit), every other metric in the paper's unit."""
    if metric == "macs_t":
        unit, factor = macs_unit(values)
        return f"MACs ({unit})", factor
    return METRICS[metric][3], 1.0
