"""A run's per-sample record (records.samples): the per-sample values its scores were computed
from, named as the row names their aggregates, so two rows on the same seeds can be compared
sample by sample (analysis.paired)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..metrics.registry import METRICS
from ..records.samples import write_samples
from ..sampling.noise import sample_seed
from .prepare import Point


def columns(point: Point, part: dict, metrics: dict) -> dict[str, np.ndarray]:
    """(n,) arrays, sample i in row i: index, seed, label and each per-sample value the run
    computed (each registered metric's `columns`). Columns whose row aggregate the run left out
    (a stochastic sampler's paired scores against the converged ODE samples) are left out too."""
    index = part["index"].numpy()
    out: dict[str, np.ndarray] = {"index": index, "seed": np.array([sample_seed(point.run.seed, int(i)) for i in index],
                                                                   np.int64),
                                  "label": part["labels"].numpy().astype(np.int64)}
    for metric in METRICS.values():  # each registered metric's per-sample values
        out.update(metric.columns(part, metrics))
    return out


def write(point: Point, part: dict, metrics: dict, replicates: dict, run_dir: Path) -> Path:
    """Write `<run_dir>/per_sample.npz` (records.samples) with the row's jackknife replicates."""
    meta = {"run_id": Path(run_dir).name, "num_samples": len(part["index"]), "seed": int(point.run.seed),
            "numel": {"latent": part["latent_numel"], "image": part["image_numel"]},
            "peak_to_peak": {key: metrics[f"{key}_latent_peak_to_peak"] for key in ("converged", "paired")
                             if metrics.get(f"{key}_latent_peak_to_peak") is not None},
            "jackknife": {"groups": metrics.get("interval_groups"), "seed": metrics.get("interval_seed"),
                          "replicates": replicates}}
    return write_samples(run_dir, columns(point, part, metrics), meta)
