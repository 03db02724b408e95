"""Result rows -> the paper's row keys (model, resolution, method, NFE, ...) and units."""

from __future__ import annotations

import math

import pandas as pd

from l2c_bench.caching import CACHE_METHODS

from .metrics import METRICS
from .uncertainty import ci_columns, pool_seeds

SAMPLER_NAMES = {"ddim": "DDIM", "ddpm": "DDPM", "dpm_solver2": "DPM-Solver-2", "dpm_solver_fast": "DPM-Solver (fast)",
                 "flow_euler": "Flow Euler"}


def _get(row, key, default=None):
    value = row.get(key, default)
    return default if value is None or (isinstance(value, float) and math.isnan(value)) else value


def resolution(row) -> int:
    """Image side in pixels: latent size x 8 with the SD VAE, else the model's input size."""
    from l2c_bench.models import MODEL_SPECS

    arch = row["config.model.arch"]
    args = MODEL_SPECS[arch][1] if arch in MODEL_SPECS else None
    size = _get(row, "config.model.overrides.input_size") or _get(row, "config.model.overrides.img_size")
    if size is None and args is not None:
        size = getattr(args, "input_size", None) or getattr(args, "img_size", None)
    size = int(size or 0)
    return size * 8 if row.get("config.model.vae") == "sd" else size


def method(row) -> str:
    """The paper's method label for a row."""
    name = row["config.cache.name"]
    sampler = _get(row, "config.sampler.name") or row.get("config.model.default_sampler")
    if name == "none":
        return SAMPLER_NAMES.get(sampler, sampler)
    if name == "heuristic":
        ratio, shifted = float(_get(row, "config.cache.ratio", 0.5)), _get(row, "config.cache.shifted", True)
        if ratio == 1.0:
            return "Cache - shifted (all layers)" if shifted else "Cache (all layers)"
        return f"Heuristic ({_get(row, 'config.cache.strategy', 'bottom')}, {ratio:g})"
    interval = int(_get(row, "config.cache.interval", 2))
    if name == "l2c" and interval != 2:
        return f"L2C (k={interval})"
    registered = CACHE_METHODS.get(name)  # each method's own `label`, read when the row is labelled
    return registered.label if registered is not None else name


def series(row) -> str:
    """The curve a row belongs to in speed-quality plots: one per method family."""
    name = row["config.cache.name"]
    if name == "none":
        return f"{method(row)} (step reduction)"
    if name == "heuristic" and float(_get(row, "config.cache.ratio", 0.5)) != 1.0:
        return f"Heuristic ({_get(row, 'config.cache.strategy', 'bottom')})"
    if name == "l2c":
        return "L2C"  # cycles k = 2, 3, 4 are points along one curve
    return method(row)


def threshold(row):
    """The L2C threshold that ran (null in the config: the paper's value for the family)."""
    if row["config.cache.name"] != "l2c":
        return None
    value = _get(row, "config.cache.threshold")
    if value is None:
        from l2c_bench.caching.methods.l2c.method import PAPER_THRESHOLDS

        family = "uvit" if str(row["config.model.arch"]).startswith("U-ViT") else "dit"
        value = PAPER_THRESHOLDS[family]
    return float(value)


def paper_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """ok rows -> one row per point (seeds pooled: uncertainty.pool_seeds) with the paper's key
    columns, `seeds`, and per metric its value and 95% interval (`<m>_ci_low`, `<m>_ci_high`,
    None where unknown) in the paper's units."""
    return labelled(pool_seeds(rows[rows["status"] == "ok"] if "status" in rows else rows))


def labelled(rows: pd.DataFrame) -> pd.DataFrame:
    """paper_frame of rows already pooled (a caller that also needs the pooled rows themselves,
    with their per-sample records, pools once)."""
    out = []
    for _, row in rows.iterrows():
        record = {
            "run_id": row["run_id"],
            "scale": row.get("config.scale.name"),
            "features": _get(row, "metrics.features", row.get("config.scale.features")),
            "model": row["config.model.arch"],
            "resolution": resolution(row),
            "method": method(row),
            "series": series(row),
            "nfe": int(row["config.steps"]),
            "lambda": _get(row, "config.router.lam") if row["config.cache.name"] == "l2c" else None,
            "threshold": threshold(row),
            "cache": row["config.cache.name"],
            "seeds": int(row["seeds"]),
            "primary_quality": _get(row, "metrics.primary_quality"),
        }
        for metric, (column, factor, _, _) in METRICS.items():
            for name, key in zip((metric, *ci_columns(metric)), (column, *ci_columns(column)), strict=True):
                value = _get(row, key)
                record[name] = None if value is None else float(value) * factor
        out.append(record)
    return pd.DataFrame(out)
