"""Rows compared sample by sample where they ran on the same seeds (one place; docs/analysis.md,
"Paired verdicts").

Two rows of one model on the same sample seeds (every cached row and its uncached twin, every
method at one NFE) share their samples' initial noise, so their per-sample errors correlate: the
difference of their statistics is known far better than either statistic alone. A *contrast* is
sum_k w_k * m(row_k) for one quality metric m (a difference: weights 1, -1; a row against a point
interpolated between two others: 1, -(1 - t), -t). Its 95% interval:

- paired, from the rows' per-sample records (records.samples) on the seeds all of them share:
  m is recomputed from the per-sample values (a PSNR from the mean of the per-sample MSE, a mean
  SSIM ...), and the contrast gets the delete-a-group jackknife over the shared samples (the row
  intervals' construction, metrics/intervals.py: G groups, t(G - 1) quantile), every side leaving
  out the same samples;
- paired, for set metrics (FID, KID, recall: no per-sample form), from the jackknife replicates the
  records keep: where every side dealt the same seeds into the same groups, replicate g of the
  contrast is the contrast of the sides' replicates g;
- marginal otherwise (rows without records, no shared seeds): the value's interval from the rows'
  own intervals as if independent, each end at the distance sqrt(sum_k d_k^2), d_k how far row
  k's interval end moves the contrast that way (intervals need not be symmetric). Tables say which.

Verdicts on a contrast (oriented so that positive is better): `better`/`worse` when the interval
lies wholly on one side of 0 (a one-sided test at 2.5%); non-inferiority ("keeps the quality")
against a margin: holds when the interval lies wholly above -margin, does not hold when wholly
below it, undetermined otherwise. An undetermined verdict carries the sample count at which, were
the observed effect and per-sample spread the truth, the interval would clear the boundary with
80% probability (samples_to_decide; the standard error shrinks as 1/sqrt(n)).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from l2c_bench.metrics.intervals import LEVEL, group_ids, jackknife_bounds
from l2c_bench.metrics.registry import mean_ranges

GROUPS = 20  # jackknife groups, as metrics.interval_groups
GROUP_SEED = 0

# The margin of "keeps the quality" on each axis (docs/analysis.md, "Margins", says why these):
# a contrast whose whole interval lies above -margin keeps it. PSNR in dB, FID and KID in their units.
MARGINS: dict[str, float] = {
    "converged_image_psnr_db": 0.5, "converged_latent_psnr_db": 0.5, "paired_image_psnr_db": 0.5,
    "paired_latent_psnr_db": 0.5, "fid": 0.1, "fid_vs_converged": 0.1, "kid": 0.001, "kid_vs_converged": 0.001,
    "converged_image_ssim": 0.01, "paired_image_ssim": 0.01, "converged_image_lpips": 0.01,
    "paired_image_lpips": 0.01, "clip_score": 0.5, "is": 5.0,
}

_PSNR = re.compile(r"^(converged|paired)_(latent|image)_psnr_db$")
_MSE = re.compile(r"^(converged|paired)_(latent|image)_mse$")
_MEANS = set(mean_ranges())  # means of a per-sample score, kept under the metric's own name (registered)
_RATES = {"on_class_rate": "on_class", "class_flip_rate": "class_flip"}


@dataclass(frozen=True)
class Side:
    """One row of a contrast: its flat fields (`metrics.*`) and its per-sample record (or None)."""

    row: Mapping
    record: object | None = None  # records.samples.SampleRecord


def side(row: Mapping) -> Side:
    """A row and its per-sample record (the `samples` column of load_results(..., samples=True))."""
    record = row.get("samples")
    return Side(row, record if record is not None and not isinstance(record, float) else None)


@dataclass(frozen=True)
class Contrast:
    """sum_k w_k m(row_k) with its 95% interval; `paired` says how the interval was had."""

    value: float
    low: float | None
    high: float | None
    paired: bool
    samples: int | None = None  # the samples behind the interval (shared seeds when paired)
    correlation: float | None = None  # per-sample correlation of the first two sides' values
    how: str = ""
    df: int | None = None  # degrees of freedom of its t quantile (jackknife: groups - 1); None: normal

    @property
    def known(self) -> bool:
        return self.low is not None and self.high is not None

    def oriented(self, higher_is_better: bool) -> Contrast:
        """The same contrast with its sign turned so that positive is better."""
        if higher_is_better:
            return self
        return Contrast(-self.value, None if self.high is None else -self.high, None if self.low is None else -self.low,
                        self.paired, self.samples, self.correlation, self.how, self.df)

    def __str__(self) -> str:
        if not self.known:
            return f"{self.value:+.3g} [interval unknown]"
        return f"{self.value:+.3g} [{self.low:+.3g}, {self.high:+.3g}]"


def _peak(metric: str, record) -> float | None:
    """The PSNR peak of a `*_psnr_db` metric in a record: 2 for images in [-1, 1], the row's
    latent peak-to-peak for latents."""
    reference, space = _PSNR.match(metric).groups()
    return 2.0 if space == "image" else record.meta.get("peak_to_peak", {}).get(reference)


def per_sample_statistic(metric: str, record, peak: float | None = None) -> Callable[[np.ndarray], float] | None:
    """The row metric `metric` as a function of the record's rows (an index array), or None where
    the record has no per-sample form of it (set metrics, a missing column). A PSNR takes `peak`
    where given (one peak for every side of a contrast: a difference of PSNRs is then the log
    ratio of the MSEs, whatever each run's latent range), else the record's own."""
    columns = record.columns
    if match := _PSNR.match(metric):
        reference, space = match.groups()
        mse = columns.get(f"{reference}_{space}_mse")
        peak = peak if peak is not None else _peak(metric, record)
        if mse is None or peak is None:
            return None
        return lambda rows: _psnr(float(mse[rows].mean()), peak)
    column = metric if (_MSE.match(metric) or metric in _MEANS) else _RATES.get(metric)
    values = columns.get(column) if column else None
    if values is None:
        return None
    values = values.astype(np.float64)
    return lambda rows: float(values[rows].mean())


def _psnr(mse: float, peak: float) -> float:
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def contrast(sides: Sequence[Side], weights: Sequence[float], metric: str, *, groups: int = GROUPS,
             seed: int = GROUP_SEED, level: float = LEVEL) -> Contrast | None:
    """sum_k weights[k] * metric(sides[k]) and its 95% interval: paired where the sides' records
    allow (see the module docstring), marginal otherwise; None where a side lacks the metric."""
    values = [_value(side.row, metric) for side in sides]
    if any(v is None for v in values):
        return None
    records = [side.record for side in sides]
    if all(r is not None for r in records):
        found = _paired_per_sample(records, weights, metric, groups, seed, level)
        if found is None:
            found = _paired_replicates(sides, values, weights, metric, level)
        if found is not None:
            return found
    return _marginal(sides, values, weights, metric)


def difference(a: Side, b: Side, metric: str, **kwargs) -> Contrast | None:
    """metric(a) - metric(b) (see contrast)."""
    return contrast([a, b], [1.0, -1.0], metric, **kwargs)


def _value(row: Mapping, metric: str) -> float | None:
    value = row.get(f"metrics.{metric}")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        return None
    return float(value)


def _count(value) -> int:
    """A pooled row's `seeds` (1 where the row is one run)."""
    return int(value) if isinstance(value, numbers.Real) and math.isfinite(value) and value >= 1 else 1


def _shared_rows(records) -> list[np.ndarray] | None:
    """Per record, the row indices of the seeds every record has, in one order; None if < 2."""
    shared = records[0].seeds
    for record in records[1:]:
        shared = np.intersect1d(shared, record.seeds)
    if len(shared) < 2:
        return None
    rows = []
    for record in records:
        order = np.argsort(record.seeds, kind="stable")
        rows.append(order[np.searchsorted(record.seeds[order], shared)])
    return rows


def _paired_per_sample(records, weights, metric, groups, seed, level) -> Contrast | None:
    peak = _peak(metric, records[0]) if _PSNR.match(metric) else None
    statistics = [per_sample_statistic(metric, record, peak) for record in records]
    if any(s is None for s in statistics) or (aligned := _shared_rows(records)) is None:
        return None
    n = len(aligned[0])

    def combined(keep: np.ndarray) -> float:
        return float(sum(w * stat(rows[keep]) for w, stat, rows in zip(weights, statistics, aligned, strict=True)))

    everything = np.ones(n, dtype=bool)
    value = combined(everything)
    ids = group_ids(n, groups, seed)
    replicates = [combined(ids != g) for g in range(int(ids.max()) + 1)]
    bounds = jackknife_bounds(value, replicates, level)
    correlation = _correlation(records[0], records[1], aligned[0], aligned[1], metric) if len(records) > 1 else None
    return Contrast(value, *(bounds or (None, None)), paired=True, samples=n, correlation=correlation,
                    how=f"paired: {n} shared seeds, jackknife-{int(ids.max()) + 1}", df=int(ids.max()))


def _correlation(a, b, rows_a, rows_b, metric) -> float | None:
    """Pearson correlation of the two sides' per-sample values behind `metric` (the MSE column of a PSNR)."""
    match = _PSNR.match(metric)
    column = f"{match.group(1)}_{match.group(2)}_mse" if match else metric if (metric in _MEANS or _MSE.match(metric)) \
        else _RATES.get(metric)
    if column is None or column not in a.columns or column not in b.columns:
        return None
    x, y = a.columns[column][rows_a].astype(np.float64), b.columns[column][rows_b].astype(np.float64)
    if x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def _paired_replicates(sides, values, weights, metric, level) -> Contrast | None:
    """Set metrics: replicate g of the contrast from the sides' replicates g, where every side
    dealt the same seeds into the same jackknife groups."""
    records = [side.record for side in sides]
    replicates = [record.replicates(metric) for record in records]
    if any(r is None for r in replicates):
        return None
    first = records[0]
    same_groups = all(np.array_equal(r.seeds, first.seeds) and r.meta.get("jackknife", {}).get("groups")
                      == first.meta.get("jackknife", {}).get("groups") and r.meta.get("jackknife", {}).get("seed")
                      == first.meta.get("jackknife", {}).get("seed") and len(rep) == len(replicates[0])
                      for r, rep in zip(records, replicates, strict=True))
    if not same_groups:
        return None
    value = float(sum(w * v for w, v in zip(weights, values, strict=True)))
    combined = sum(w * rep for w, rep in zip(weights, replicates, strict=True))
    bounds = jackknife_bounds(value, combined, level)
    return Contrast(value, *(bounds or (None, None)), paired=True, samples=len(first.seeds),
                    how=f"paired: jackknife-{len(combined)} replicates on the same seeds", df=len(combined) - 1)


def _marginal(sides, values, weights, metric) -> Contrast:
    """Independent rows: the distances from each value to its interval's ends combined in
    quadrature, each side separately (an interval need not be symmetric: FID clipped at 0, a
    Wilson rate), the contrast's lower end from the ends each weight pulls down."""
    value = float(sum(w * v for w, v in zip(weights, values, strict=True)))
    below, above = [], []
    for side, w, v in zip(sides, weights, values, strict=True):
        low, high = _value(side.row, f"{metric}_ci_low"), _value(side.row, f"{metric}_ci_high")
        if low is None or high is None:
            return Contrast(value, None, None, paired=False, how="marginal: a row has no interval")
        down, up = w * (v - low), w * (high - v)  # how far the contrast moves at each end
        below.append(down if w >= 0 else -up)
        above.append(up if w >= 0 else -down)
    counts = [_value(side.row, "num_samples") for side in sides]
    seeds = [_count(side.row.get("seeds")) for side in sides]
    samples = int(min(c * s for c, s in zip(counts, seeds, strict=True))) if None not in counts else None
    why = ("no per-sample records" if any(side.record is None for side in sides)
           else "no shared seeds or no per-sample form of this metric")
    return Contrast(value, value - math.hypot(*below), value + math.hypot(*above), paired=False, samples=samples,
                    how=f"marginal: {why} (intervals combined as independent)")


# --- decisions ---------------------------------------------------------------------------------


def better(c: Contrast | None, higher_is_better: bool) -> str:
    """'better' / 'worse' when the contrast's interval lies wholly above / below 0 (oriented),
    'tie' when it holds 0, 'unknown' without an interval."""
    if c is None or not c.known:
        return "unknown"
    o = c.oriented(higher_is_better)
    return "better" if o.low > 0 else "worse" if o.high < 0 else "tie"


def non_inferior(c: Contrast | None, margin: float, higher_is_better: bool) -> str:
    """'holds' when the oriented interval lies wholly above -margin, 'does not hold' when wholly
    below it, 'undetermined' when it holds -margin or is unknown."""
    if c is None or not c.known:
        return "undetermined"
    o = c.oriented(higher_is_better)
    return "holds" if o.low > -margin else "does not hold" if o.high < -margin else "undetermined"


POWER = 0.8  # samples_to_decide: the chance that the interval then clears the boundary


def samples_to_decide(c: Contrast | None, boundary: float, higher_is_better: bool, samples: int | None) -> int | None:
    """The sample count at which, if the observed oriented effect and the per-sample spread are the
    truth, the 95% interval clears `boundary` (0 for better/worse, -margin for non-inferiority)
    with probability POWER: n * ((z_0.975 + z_POWER) * se / distance)^2, se the standard error
    behind the interval's end that faces the boundary. None where nothing is known or the effect
    sits on the boundary (no count decides it)."""
    from scipy.stats import norm, t

    if c is None or not c.known or not samples:
        return None
    o = c.oriented(higher_is_better)
    distance = o.value - boundary
    half = (o.value - o.low) if distance > 0 else (o.high - o.value)  # the end that faces the boundary
    if distance == 0 or not math.isfinite(half):
        return None
    quantile = float(t.ppf(0.5 + LEVEL / 2, c.df)) if c.df else float(norm.ppf(0.5 + LEVEL / 2))
    se = half / quantile
    needed = samples * ((float(norm.ppf(0.5 + LEVEL / 2)) + float(norm.ppf(POWER))) * se / abs(distance)) ** 2
    return math.ceil(needed)


# --- a row against its uncached twin, for tables -----------------------------------------------

MARGINAL_MARK = "ᵐ"  # a contrast whose interval is marginal (no shared per-sample records)


def contrast_text(c: Contrast | None, factor: float = 1.0) -> str:
    """`+0.76 [+0.23, +1.30]` in the table's units; MARGINAL_MARK after a marginal one; "" if none."""
    if c is None:
        return ""
    mark = "" if c.paired else MARGINAL_MARK
    if not c.known:
        return f"{c.value * factor:+.3g}{mark} [?]"
    return f"{c.value * factor:+.3g}{mark} [{c.low * factor:+.3g}, {c.high * factor:+.3g}]"


def _sampler(row: Mapping) -> object:
    name = row.get("config.sampler.name")
    return name if isinstance(name, str) and name else row.get("config.model.default_sampler")


def twin_delta(row: Mapping, twin: Mapping, metric: str, factor: float = 1.0) -> str:
    """`contrast_text` of the row's `metric` (a row key without `metrics.`) minus its uncached
    twin's, in the table's units (`factor`); "" for the twin itself, and where the two did not
    sample alike (another sampler: not the twin)."""
    if row.get("run_id") == twin.get("run_id") or _sampler(row) != _sampler(twin):
        return ""
    return contrast_text(difference(side(row), side(twin), metric), factor)


TWIN_NOTE = (f"Δ vs uncached: the row's quality minus the uncached sampler's at the same NFE, paired over the "
             f"seeds both ran (delete-a-group jackknife, 95%); {MARGINAL_MARK} = marginal (no per-sample "
             f"records: the two rows' intervals combined as independent).")
