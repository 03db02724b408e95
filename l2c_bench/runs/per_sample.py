"""A run's per-sample record (records.samples): the per-sample values its scores were computed
from, named as the row names their aggregates, so two rows on the same seeds can be compared
sample by sample (analysis.paired)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..metrics.intervals import MEAN_RANGES
from ..records.samples import write_samples
from ..sampling.noise import sample_seed
from .prepare import Point

# part key (sums of squared errors over a sample's elements) -> per-sample column, and the numel it divides by
SQUARED_ERRORS = {"converged_latent_se": ("converged_latent_mse", "latent_numel"),
                  "converged_image_se": ("converged_image_mse", "image_numel"),
                  "latent_se": ("paired_latent_mse", "latent_numel"),
                  "image_se": ("paired_image_mse", "image_numel")}


def columns(point: Point, part: dict, metrics: dict) -> dict[str, np.ndarray]:
    """(n,) arrays, sample i in row i: index, seed, label and each per-sample value the run
    computed. Columns whose row aggregate the run left out (a stochastic sampler's paired scores
    against the converged ODE samples) are left out too."""
    index = part["index"].numpy()
    out: dict[str, np.ndarray] = {"index": index, "seed": np.array([sample_seed(point.cfg.seed, int(i)) for i in index],
                                                                   np.int64),
                                  "label": part["labels"].numpy().astype(np.int64)}
    for key, (column, numel) in SQUARED_ERRORS.items():
        if part.get(key) is not None and metrics.get(column) is not None:
            out[column] = part[key].double().numpy() / part[numel]
    for key in MEAN_RANGES:  # per-sample scores, kept as the part holds them
        if part.get(key) is not None and metrics.get(key) is not None:  # the row kept its aggregate
            out[key] = part[key].double().numpy()
    logits = part.get("logits")
    if logits is not None and metrics.get("on_class_rate") is not None:
        out["on_class"] = (logits.argmax(1) == part["labels"]).numpy().astype(np.int8)
    if logits is not None and part.get("reference_logits") is not None:
        out["class_flip"] = (logits.argmax(1) != part["reference_logits"].argmax(1)).numpy().astype(np.int8)
    return out


def write(point: Point, part: dict, metrics: dict, replicates: dict, run_dir: Path) -> Path:
    """Write `<run_dir>/per_sample.npz` (records.samples) with the row's jackknife replicates."""
    meta = {"run_id": Path(run_dir).name, "num_samples": len(part["index"]), "seed": int(point.cfg.seed),
            "numel": {"latent": part["latent_numel"], "image": part["image_numel"]},
            "peak_to_peak": {key: metrics[f"{key}_latent_peak_to_peak"] for key in ("converged", "paired")
                             if metrics.get(f"{key}_latent_peak_to_peak") is not None},
            "jackknife": {"groups": metrics.get("interval_groups"), "seed": metrics.get("interval_seed"),
                          "replicates": replicates}}
    return write_samples(run_dir, columns(point, part, metrics), meta)
