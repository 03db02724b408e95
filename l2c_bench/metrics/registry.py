"""The row's metrics as objects, registered once (docs/adding_a_metric.md).

A `Metric` owns what a run needs of it, at each step of `l2c_bench.runs`:

- `update(batch)`: per-sample values of one batch (`Batch`: the method's samples, and on demand
  the uncached twin's and the converged reference's on the same seeds), kept in the run's part
  under its own keys (`part_keys` are declared in every part, None where none were computed);
- `value(part, scoring, row)`: its row fields from the whole run's part (`row`: the fields so far);
- `interval(part, row, jackknife)`: the `<key>_ci_low`/`_ci_high` of its fields (metrics/intervals.py);
- `columns(part, row)`: its per-sample columns of the per-sample record (records.samples);
- `directions`: each row key it ranks on and whether higher is better (the analysis reads them
  here: analysis.metrics, analysis.claims).

`METRICS` holds them in scoring order (a metric's value may read an earlier one's fields);
`runs.sample` and `runs.score` loop over it. `PerSampleMean` is the usual case: a mean of a
per-sample score with a jackknife interval clipped to the score's range.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .intervals import (
    Bounds,
    _clip,
    ci_fields,
    group_ids,
    jackknife_bounds,
    jackknife_replicates,
    method_label,
    timing_fields,
)

# Modules that define and register the metrics, imported (in this order) with this one.
METRIC_MODULES = ("l2c_bench.metrics.builtin", "l2c_bench.metrics.video")


@dataclass
class Batch:
    """One batch as a metric's `update` sees it (CPU tensors unless said): the run's `point`, the
    `generate` arguments, the sample indices, the method's `result` and its float `images`;
    `reference(kind)` gives the uncached twin (`"uncached"`, cached runs) or the converged
    reference (`"converged"`, where metrics.converged_nfe is on) as (latents, images), or None,
    sampled (or read from the shared store) once per batch whoever asks first."""

    point: Any
    kwargs: dict
    index: torch.Tensor
    result: Any
    images: torch.Tensor
    fetch: Callable[[str], tuple[torch.Tensor, torch.Tensor] | None]
    _references: dict = field(default_factory=dict, repr=False)

    def reference(self, kind: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        if kind not in self._references:
            self._references[kind] = self.fetch(kind)
        return self._references[kind]


@dataclass(frozen=True)
class Scoring:
    """What a metric's `value` sees beyond the part: the run's `point` and the reference set the
    set metrics score against (`runs.score.quality_reference`: None, the set, or ReferenceMissing)."""

    point: Any
    reference: Any = None


@dataclass(frozen=True)
class Jackknife:
    """What a metric's `interval` sees: the samples' jackknife groups `ids` (metrics.intervals.group_ids),
    the reference set scored against (None: none), k of the k-NN metrics, the device of the fast
    paths, and `replicates`, which receives each jackknifed set metric's replicates."""

    ids: np.ndarray
    reference: Any = None
    k: int = 3
    device: Any = "cpu"
    replicates: dict | None = None


class Metric:
    """One metric (or a family of row fields computed together); override what it needs."""

    name: str = ""
    part_keys: tuple[str, ...] = ()  # per-sample arrays present in every part (None where not computed)
    directions: Mapping[str, bool] = {}  # ranked row key -> higher is better

    def update(self, batch: Batch) -> Mapping[str, torch.Tensor]:
        return {}

    def value(self, part: Mapping, scoring: Scoring, row: Mapping) -> dict:
        return {}

    def interval(self, part: Mapping, row: Mapping, jackknife: Jackknife) -> dict:
        return {}

    def columns(self, part: Mapping, row: Mapping) -> dict[str, np.ndarray]:
        return {}


class PerSampleMean(Metric):
    """The run's mean of a per-sample score `score(batch)` ((n,) or None: not computed for this
    run), kept in the part and the per-sample record under `name`; its interval is the delete-a-group
    jackknife of the mean, clipped to `bounds`. `requires`: a row field that must be set for the
    mean to be reported (the pairs it is computed on exist)."""

    higher_is_better: bool = True
    bounds: Bounds = (-math.inf, math.inf)
    requires: str | None = None

    @property
    def directions(self) -> Mapping[str, bool]:
        return {self.name: self.higher_is_better}

    def score(self, batch: Batch) -> torch.Tensor | None:
        raise NotImplementedError

    def update(self, batch: Batch) -> Mapping[str, torch.Tensor]:
        scores = self.score(batch)
        return {} if scores is None else {self.name: scores}

    def value(self, part: Mapping, scoring: Scoring, row: Mapping) -> dict:
        if part.get(self.name) is None or (self.requires is not None and row.get(self.requires) is None):
            return {}
        return {self.name: float(part[self.name].double().mean())}

    def interval(self, part: Mapping, row: Mapping, jackknife: Jackknife) -> dict:
        if part.get(self.name) is None or row.get(self.name) is None:
            return {}
        scores = part[self.name].double().numpy()
        bounds = jackknife_bounds(row[self.name], jackknife_replicates(np.mean, scores, ids=jackknife.ids))
        return ci_fields(self.name, _clip(bounds, *self.bounds))

    def columns(self, part: Mapping, row: Mapping) -> dict[str, np.ndarray]:
        if part.get(self.name) is None or row.get(self.name) is None:  # the row kept its aggregate
            return {}
        return {self.name: part[self.name].double().numpy()}


METRICS: dict[str, Metric] = {}


def register(metric):
    """Add a metric (an instance, or a class instantiated without arguments) under its name;
    returns what it was given, so it serves as a class decorator."""
    instance = metric() if isinstance(metric, type) else metric
    if not instance.name:
        raise ValueError(f"{type(instance).__name__}: a metric needs a name")
    if instance.name in METRICS:
        raise ValueError(f"metric {instance.name!r} is registered twice")
    METRICS[instance.name] = instance
    return metric


def directions() -> dict[str, bool]:
    """Every ranked row key (without `metrics.`) -> higher is better, from the registered metrics."""
    out: dict[str, bool] = {}
    for metric in METRICS.values():
        for key, higher in metric.directions.items():
            if out.setdefault(key, higher) != higher:
                raise ValueError(f"{key}: two metrics declare opposite directions")
    return out


def higher_is_better(key: str) -> bool:
    """Whether a higher value of row key `key` (with or without `metrics.`) is better."""
    try:
        return directions()[key.removeprefix("metrics.")]
    except KeyError:
        raise KeyError(f"{key}: no registered metric ranks this row key (l2c_bench.metrics.registry)") from None


def mean_ranges() -> dict[str, Bounds]:
    """The per-sample-mean metrics (kept under their own name in the part, the row and the
    per-sample record) and their scores' ranges."""
    return {m.name: m.bounds for m in METRICS.values() if isinstance(m, PerSampleMean)}


for _module in METRIC_MODULES:
    importlib.import_module(_module)


def row_fields(values: Mapping, part: Mapping, *, method_s: Sequence[float], uncached_s: Sequence[float],
               groups: int, resamples: int, seed: int, reference=None, k: int = 3, device="cpu",
               replicates: dict | None = None) -> dict:
    """Every interval of a run's row (`values`: its metrics so far) from the run's joined per-sample
    data `part` (runs.sample.sample_part, shards joined) and its timed repeats; with the method's name,
    its settings and its cost `intervals_s`. `replicates`: see quality_fields."""
    start = time.perf_counter()
    out = timing_fields(method_s, uncached_s, resamples=resamples, seed=seed)
    n = len(part["index"])
    if n < 2:  # a jackknife needs two samples: the quality numbers of a 1-sample run have no interval
        out.update(quality_ci_note=f"{n} sample: a quality interval needs >= 2 (metrics.num_samples)",
                   interval_method=method_label(0, resamples), interval_resamples=resamples, interval_groups=0,
                   interval_seed=seed, intervals_s=time.perf_counter() - start)
        return out
    ids = group_ids(n, groups, seed)
    jackknife = Jackknife(ids, reference=reference, k=k, device=device, replicates=replicates)
    for metric in METRICS.values():  # each registered metric's intervals
        out.update(metric.interval(part, values, jackknife))
    out.update(interval_method=method_label(int(ids.max()) + 1, resamples), interval_resamples=resamples,
               interval_groups=int(ids.max()) + 1, interval_seed=seed, intervals_s=time.perf_counter() - start)
    return out
