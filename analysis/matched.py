"""Speedup at matched quality: for each model, each method's measured speedup where its own
quality curve (its points along its parameter: intervals, thresholds, ratios) crosses a fixed
quality level, with 95% intervals. The number a user picking a method wants.

    python -m l2c_bench.run -m +sweep=matched_quality   # the methods' curves (and +sweep=claims: L2C, heuristics)
    python -m analysis.matched --results results --out analysis_out
    python -m analysis.matched --level paired_image_psnr_db=25,30 --level paired_image_lpips=0.05,0.1

Quality is each row's fidelity to its uncached twin on the same seeds (image PSNR; LPIPS where
the rows have it): the quality a cached method gives up, in the units caching papers report it.
Levels (LEVELS, `--level`): PSNR 20 and 25 dB, which the toy methods' curves straddle at NFE 20
(FORA, DeepCache, FBCache, TeaCache, TaylorSeer and the heuristics all run from below 20 to about
25 dB and beyond; docs/analysis.md, "Speedup at matched quality", lists the curves); LPIPS 0.05
and 0.10, the levels cache-dit and EasyCache report.

A method's points are ordered by measured speedup; where two neighbours' qualities lie on either
side of the level, the speedup is interpolated linearly in quality between them. Its interval: the
crossing recomputed at every end of the two points' quality and speedup intervals (the widest
range; conservative). Several crossings (a curve that is not monotone): the fastest. A curve that
never reaches the level: `< level` with its best point; one whose every point is better: `>= s`
(the level lies beyond the fastest point the sweep ran).
"""

from __future__ import annotations

import argparse
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .cli import results_to_files
from .frontier import settings
from .labels import labelled
from .paper import BASELINES
from .uncertainty import interval, pool_seeds

# quality axis (row key without `metrics.`) -> (levels, higher is better, label)
LEVELS: dict[str, tuple[tuple[float, ...], bool, str]] = {
    "paired_image_psnr_db": ((20.0, 25.0), True, "PSNR vs uncached (dB)"),
    "paired_image_lpips": ((0.05, 0.10), False, "LPIPS vs uncached"),
}


@dataclass(frozen=True)
class Point:
    speedup: float
    speedup_bounds: tuple[float, float]
    quality: float
    quality_bounds: tuple[float, float]
    settings: str


@dataclass(frozen=True)
class Crossing:
    """The speedup at a quality level: `value` [low, high], or where the curve does not cross it,
    `bound` ('>=' every point better / '<' never reached) with the point it is read from."""

    value: float
    low: float | None = None
    high: float | None = None
    bound: str = ""

    def __str__(self) -> str:
        if self.bound == ">=":
            return f"≥ {self.value:.2f}x (every point better)"
        if self.bound == "<":
            return "not reached"
        return f"{self.value:.2f}x [{self.low:.2f}, {self.high:.2f}]"


def _crossing_at(a: Point, b: Point, level: float, qa: float, qb: float, sa: float, sb: float) -> float | None:
    if qa == qb or (qa - level) * (qb - level) > 0:
        return None
    return sa + (level - qa) / (qb - qa) * (sb - sa)


def crossing(points: list[Point], level: float, higher: bool) -> Crossing | None:
    """Where the points' quality curve (ordered by speedup) crosses `level` (see the module doc)."""
    if not points:
        return None
    points = sorted(points, key=lambda p: p.speedup)

    def good(q: float) -> bool:
        return q >= level if higher else q <= level

    found = []
    for a, b in itertools.pairwise(points):
        value = _crossing_at(a, b, level, a.quality, b.quality, a.speedup, b.speedup)
        if value is None:
            continue
        corners = [_crossing_at(a, b, level, qa, qb, sa, sb) for qa, qb, sa, sb in itertools.product(
            a.quality_bounds, b.quality_bounds, a.speedup_bounds, b.speedup_bounds)]
        # an end where the two qualities no longer straddle the level: the crossing may lie anywhere
        # between the points, so the interval takes both points' speedup ends
        ends = [c for c in corners if c is not None] + (
            [*a.speedup_bounds, *b.speedup_bounds] if any(c is None for c in corners) else [])
        found.append(Crossing(value, min(ends), max(ends)))
    if found:
        return max(found, key=lambda c: c.value)
    if all(good(p.quality) for p in points):
        return Crossing(points[-1].speedup, bound=">=")
    return Crossing(max(p.speedup for p in points), bound="<")  # no crossing and not every point good: none is


def _point(row: pd.Series, axis: str, settings: str) -> Point | None:
    q, s = row.get(f"metrics.{axis}"), row.get("metrics.speedup")
    if q is None or s is None or pd.isna(q) or pd.isna(s) or math.isinf(float(q)):
        return None
    qb = interval(row, f"metrics.{axis}") or (float(q), float(q))
    sb = interval(row, "metrics.speedup") or (float(s), float(s))
    return Point(float(s), sb, float(q), qb, settings)


def matched_tables(results: pd.DataFrame, levels: dict | None = None) -> dict[str, str]:
    """{file stem: markdown}: per (scale, model, sampler, NFE), one row per method, one column
    per quality level of each axis the rows have."""
    levels = {**LEVELS, **(levels or {})}
    ok = results[results["status"] == "ok"] if "status" in results else results
    if ok.empty:
        return {}
    pooled = pool_seeds(ok).set_index("run_id", drop=False)
    frame = labelled(pooled.reset_index(drop=True)).set_index("run_id")
    tables = {}
    for (scale, model, nfe), rows in frame.groupby(["scale", "model", "nfe"]):
        cached = rows[~rows["method"].isin(BASELINES)]
        axes = [a for a in levels if f"metrics.{a}" in pooled and pooled.loc[cached.index, f"metrics.{a}"].notna().any()]
        if cached.empty or not axes:
            continue
        header = [f"{levels[a][2]} {'≥' if levels[a][1] else '≤'} {v:g}" for a in axes for v in levels[a][0]]
        lines = [f"### {model}, NFE {nfe} ({scale} scale): speedup at matched quality", "",
                 "| method | points | " + " | ".join(header) + " |", "|---|---|" + "---|" * len(header)]
        for series, group in cached.groupby("series"):
            raw = pooled.loc[group.index]
            cells = []
            for axis in axes:
                points = [p for _, r in raw.iterrows() if (p := _point(r, axis, settings(r))) is not None]
                for level in levels[axis][0]:
                    found = crossing(points, level, levels[axis][1])
                    cells.append("" if found is None else str(found))
            lines.append(f"| {series} | {len(group)} | " + " | ".join(cells) + " |")
        lines += ["", "Speedup: measured against the uncached sampler at the same NFE, interpolated linearly in "
                  "quality between the two points of the method's curve that straddle the level; 95% interval "
                  "from the points' quality and speedup intervals. `≥` = every point of the curve is better than "
                  "the level (it lies beyond the fastest point run); not reached = no point is as good."]
        tables[f"matched_{scale}_{str(model).replace('/', '')}_nfe{nfe}"] = "\n".join(lines) + "\n"
    return tables


def write_all(results: pd.DataFrame, out: Path, levels: dict | None = None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, text in matched_tables(results, levels).items():
        path = out / f"{stem}.md"
        path.write_text(text)
        print(text)
        written.append(path)
    return written


def _level(text: str) -> tuple[str, tuple[tuple[float, ...], bool, str]]:
    axis, _, values = text.partition("=")
    if axis not in LEVELS:
        raise argparse.ArgumentTypeError(f"--level: unknown axis {axis!r}; valid: {', '.join(LEVELS)}")
    try:
        return axis, (tuple(float(v) for v in values.split(",")), *LEVELS[axis][1:])
    except ValueError:
        raise argparse.ArgumentTypeError(f"--level takes AXIS=V1,V2 (e.g. paired_image_psnr_db=30,35), "
                                         f"got {text!r}") from None


def main(argv=None) -> None:
    results_to_files(__doc__, write_all, argv,
                     extra=lambda parser: parser.add_argument(
                         "--level", type=_level, action="append", default=[], metavar="AXIS=V1,V2",
                         help="quality levels of an axis (repeatable); defaults: "
                              + "; ".join(f"{k}={','.join(f'{v:g}' for v in lv[0])}" for k, lv in LEVELS.items())),
                     options=lambda args: {"levels": dict(args.level)})


if __name__ == "__main__":
    main()
