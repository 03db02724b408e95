"""Per-sample records: each run's per-sample quality values beside its `result.json`.

A row holds aggregates (a PSNR of the run's mean squared error, an FID); comparing two rows that
ran on the same seeds needs the values sample by sample (analysis.paired). Layout of
`<results_dir>/<run_id>/per_sample.npz` (numpy's npz, no pickles; docs/results.md, "Per-sample
records"):

- `meta`: a JSON string: `format` (SAMPLES_FORMAT), `run_id`, `num_samples`, the run's `seed`,
  `numel` of a latent and an image, the latent PSNR peaks of the row, and `jackknife`: the
  interval groups (`groups`, `seed`) and, per set metric (FID, KID, recall, FID/KID against the
  converged samples), its G delete-a-group replicates. Replicate g of two runs with the same
  sample seeds, `num_samples`, groups and seed left out the same samples: their differences are
  the paired jackknife of the metric's difference.
- one (n,) array per column, sample i in row i: `index`, `seed` (its noise seed), `label`, and
  every per-sample value the run computed: `<ref>_latent_mse`, `<ref>_image_mse`, `<ref>_image_ssim`,
  `<ref>_image_lpips` (ref: `converged` = against the converged sampler, `paired` = against the
  uncached twin), `clip_score`, `on_class`, `class_flip`. A row's aggregate is a function of them
  (its PSNR: 10 log10(peak^2 / mean of the MSE column)).

Rows written before these files have none: `load_results(..., samples=True)` gives None there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..system.files import atomic_path

SAMPLES_FILE = "per_sample.npz"
SAMPLES_FORMAT = 1  # bump when a column changes meaning; readers refuse formats they do not know


class CorruptSamples(ValueError):
    """A per-sample file that cannot be read (truncated, edited, a newer format)."""


@dataclass(frozen=True)
class SampleRecord:
    """One run's per-sample values: `columns` (name -> (n,) array) and `meta` (see the module doc)."""

    columns: dict[str, np.ndarray]
    meta: dict[str, Any]

    @property
    def seeds(self) -> np.ndarray:
        return self.columns["seed"]

    def frame(self):
        """The columns as a pandas DataFrame, one row per sample."""
        import pandas as pd

        return pd.DataFrame(self.columns)

    def replicates(self, metric: str) -> np.ndarray | None:
        """The G jackknife replicates of a set metric (`fid`, ...), None if the run kept none."""
        values = self.meta.get("jackknife", {}).get("replicates", {}).get(metric)
        return None if values is None else np.asarray(values, np.float64)


def write_samples(run_dir: str | os.PathLike, columns: Mapping[str, Any], meta: Mapping[str, Any]) -> Path:
    """Atomically write `<run_dir>/per_sample.npz`; every column (n,), the same n. Returns its path."""
    arrays = {name: np.asarray(values) for name, values in columns.items() if values is not None}
    lengths = {name: a.shape for name, a in arrays.items()}
    if len({shape for shape in lengths.values()}) != 1 or len(next(iter(lengths.values()))) != 1:
        raise ValueError(f"per-sample columns must all be (n,) of one n, got {lengths}")
    if "seed" in arrays and len(np.unique(arrays["seed"])) != len(arrays["seed"]):
        raise ValueError("per-sample seeds must be distinct: a record pairs samples by seed")
    payload = {"meta": np.array(json.dumps({**meta, "format": SAMPLES_FORMAT}, sort_keys=True, default=float))}
    payload.update({f"column/{name}": a for name, a in arrays.items()})
    target = Path(run_dir) / SAMPLES_FILE
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:  # a handle: numpy would append .npz to a name
        np.savez_compressed(handle, **payload)
    return target


def read_samples(path: str | os.PathLike) -> SampleRecord:
    """A run's per-sample record from its file or its run folder; CorruptSamples naming the file if
    it cannot be read, FileNotFoundError if there is none."""
    path = Path(path)
    if path.is_dir():
        path = path / SAMPLES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no per-sample record at {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            columns = {key.removeprefix("column/"): data[key] for key in data.files if key.startswith("column/")}
    except Exception as exc:  # noqa: BLE001 - any failure inside np.load means an unusable file
        raise CorruptSamples(f"corrupt per-sample record {path} ({type(exc).__name__}: {exc}); "
                             "relaunching its point with force=true rewrites it") from None
    if meta.get("format") != SAMPLES_FORMAT:
        raise CorruptSamples(f"per-sample record {path} has format {meta.get('format')!r}; this version reads "
                             f"format {SAMPLES_FORMAT}")
    return SampleRecord(columns, meta)
