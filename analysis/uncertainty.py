"""How sure each number is: 95% intervals read from rows, seeds pooled, ties called (one place).

Intervals in rows: a metric `metrics.m` carries its 95% interval, in m's units, as
`metrics.m_ci_low` and `metrics.m_ci_high`. Rows written before intervals existed have none:
their interval is unknown (None), shown as such and never invented.

Seeds: rows whose configs differ only in `config.seed` (the same run key without the seed) are
one point. Each numeric metric is their mean, with the 95% Student-t interval over the seeds,
mean ± t(0.975, n - 1) · s / sqrt(n); the seeds' own intervals are not used then (the spread
between seeds already holds their sample noise). With one seed, the row's own interval.

Ties: two values differ significantly only when their 95% intervals are disjoint; overlapping
intervals are a tie, marked TIE_MARK (†) in tables. An unknown interval never makes a tie.
Exact metrics (counted from the schedule, `metrics.EXACT`) have the zero-width interval [v, v].
Pareto fronts (lower cost and lower quality-loss both better): a point no other dominates is on
the front; a dominated point whose every dominator overlaps it on both axes is tied with the front
(no dominator is significantly better on either axis).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .metrics import EXACT

LEVEL = 0.95
TIE_MARK = "†"
UNKNOWN = "[?]"  # a value shown without its interval: none was recorded
FRONT, TIED, DOMINATED = "front", "tied", ""

Interval = tuple[float, float]


def ci_columns(column: str) -> tuple[str, str]:
    """The columns that hold `column`'s 95% interval (row keys and paper_frame columns alike)."""
    return f"{column}_ci_low", f"{column}_ci_high"


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _number(value) -> bool:
    """A finite int or float (not a bool, not a string or list)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): the Student-t interval of the mean of n >= 2 values."""
    from scipy.stats import t

    n = len(values)
    if n < 2:
        raise ValueError(f"a t-interval needs at least 2 values, got {n}")
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def point_key(row: Mapping) -> str:
    """The identity of the point a row measures: the store's run key of its config without
    `seed` (so inert keys, paths, device and tracker do not split a point either)."""
    from l2c_bench.records import run_key

    config: dict = {}
    for column, value in row.items():
        if not str(column).startswith("config.") or column == "config.seed" or _missing(value):
            continue
        *parents, leaf = column.removeprefix("config.").split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return run_key(config)


def pool_seeds(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per point (see the module docstring). A pooled row keeps the first seed's run_id,
    config and non-numeric fields; `seeds` counts the rows it holds (1 for a lone row)."""
    if rows.empty:
        return rows.assign(seeds=pd.Series(dtype=int))
    keys = pd.Series([point_key(row) for _, row in rows.iterrows()], index=rows.index)
    intervals = {c for m in rows.columns for c in ci_columns(m)}
    metrics = [c for c in rows.columns if c.startswith("metrics.") and c not in intervals]
    pooled = []
    for _, group in rows.groupby(keys, sort=False):
        if "config.seed" in group:
            group = _independent(group.sort_values("config.seed", kind="stable"))
        record = group.iloc[0].to_dict()
        record["seeds"] = len(group)
        if "samples" in group and len(group) > 1:  # the seeds' samples, together (disjoint seeds)
            record["samples"] = joined_records(list(group["samples"]))
        for column in metrics:
            values = [v for v in group[column] if _number(v)]
            if len(values) >= 2:
                low, high = ci_columns(column)
                record[column], record[low], record[high] = t_interval(values)
            elif len(values) == 1 and len(group) > 1:  # one seed has it: that row, interval and all
                row = group[[_number(v) for v in group[column]]].iloc[0]
                for key in (column, *ci_columns(column)):
                    record[key] = row.get(key)
        pooled.append(record)
    return pd.DataFrame(pooled, columns=[*rows.columns, *sorted(set().union(*pooled) - set(rows.columns))])


DISJOINT_SEEDS_SCHEMA = 3  # rows from this schema on draw disjoint noise at different seeds (records.store)


def _independent(group: pd.DataFrame) -> pd.DataFrame:
    """The rows of one point that are independent repeats: a row written before seeds drew
    disjoint noise (schema < 3) at a nonzero seed shares all but one of its samples' noise with
    seed 0's; it is left out, with a warning naming it."""
    if len(group) < 2:
        return group
    versions = group["schema_version"] if "schema_version" in group else pd.Series(1, index=group.index)
    legacy = (versions.fillna(1).astype(int) < DISJOINT_SEEDS_SCHEMA) & (group["config.seed"] != 0)  # none: 1
    for run_id in group.loc[legacy, "run_id"] if "run_id" in group else []:
        warnings.warn(f"not pooled: {run_id} was sampled before seeds drew disjoint noise (its samples overlap "
                      "seed 0's); rerun it to pool it", stacklevel=3)
    kept = group[~legacy]
    return kept if len(kept) else group.iloc[:1]


def joined_records(records: Sequence) -> object | None:
    """One per-sample record (records.samples) of a pooled point: the seeds' columns concatenated
    (the columns every record has); no jackknife replicates (they belong to one run's groups).
    None unless every seed has a record."""
    from l2c_bench.records.samples import SampleRecord

    if not records or any(r is None or isinstance(r, float) for r in records):
        return None
    names = set.intersection(*(set(r.columns) for r in records))
    columns = {name: np.concatenate([r.columns[name] for r in records]) for name in records[0].columns if name in names}
    if len(np.unique(columns["seed"])) != len(columns["seed"]):
        warnings.warn("seeds repeat across the pooled runs' records: compared without them", stacklevel=2)
        return None
    # the first run's latent PSNR peak stands for all (a paired contrast uses one peak for every side)
    meta = {**records[0].meta, "jackknife": {}, "num_samples": len(columns["seed"]), "seed": None,
            "pooled_runs": [r.meta.get("run_id") for r in records]}
    return SampleRecord(columns, meta)


def interval(row: Mapping, metric: str) -> Interval | None:
    """A paper_frame row's 95% interval for `metric`: [v, v] for an exact metric, None if unknown."""
    value = row.get(metric)
    if _missing(value):
        return None
    if metric in EXACT:
        return float(value), float(value)
    low, high = (row.get(c) for c in ci_columns(metric))
    return None if _missing(low) or _missing(high) else (float(low), float(high))


def tied(a: Interval | None, b: Interval | None) -> bool:
    """Whether two values are a tie (their difference not significant): both intervals known
    and overlapping."""
    return a is not None and b is not None and a[0] <= b[1] and b[0] <= a[1]


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """(cost, quality loss) a dominates b: lower or equal on both, strictly lower on one."""
    return a[0] <= b[0] and a[1] <= b[1] and (a[0] < b[0] or a[1] < b[1])


def oriented(values: Sequence[float], bounds: Sequence[Interval | None], higher: bool):
    """Quality values and intervals turned so that lower is better (front_status's convention)."""
    if not higher:
        return list(values), list(bounds)
    return [-v for v in values], [None if b is None else (-b[1], -b[0]) for b in bounds]


def front_status(cost: Sequence[float], quality: Sequence[float],
                 cost_intervals: Sequence[Interval | None] | None = None,
                 quality_intervals: Sequence[Interval | None] | None = None) -> list[str]:
    """Per point: FRONT (no point dominates it), TIED (dominated only by points whose intervals
    overlap it on both axes) or DOMINATED. Without intervals nothing is tied."""
    points = list(zip(cost, quality, strict=True))
    cost_intervals = cost_intervals or [None] * len(points)
    quality_intervals = quality_intervals or [None] * len(points)
    status = []
    for i, point in enumerate(points):
        dominators = [j for j, other in enumerate(points) if dominates(other, point)]
        if not dominators:
            status.append(FRONT)
        elif all(tied(cost_intervals[i], cost_intervals[j]) and tied(quality_intervals[i], quality_intervals[j])
                 for j in dominators):
            status.append(TIED)
        else:
            status.append(DOMINATED)
    return status


def decimals(bounds: Interval | None, least: int) -> int:
    """How many decimals to write a value and its interval with: `least`, or more where the
    interval is narrower, so that its width shows (to its first significant digit; at most 6)."""
    if bounds is None or not bounds[1] > bounds[0]:
        return least
    return min(6, max(least, -math.floor(math.log10(bounds[1] - bounds[0]))))


def interval_text(bounds: Interval | None, places: int) -> str:
    """`[low, high]` with `places` decimals, or UNKNOWN."""
    return UNKNOWN if bounds is None else f"[{bounds[0]:.{places}f}, {bounds[1]:.{places}f}]"
