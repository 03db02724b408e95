"""The speed-quality frontier as a table: every method at a base NFE, with its settings.

    python -m analysis.frontier --results results --out analysis_out

For each (scale, features, model, resolution, base NFE): one row per run -- the method and its
own parameters (interval, order, ratio, threshold, ...), MACs and measured speedup against the
uncached sampler at the base NFE, FID, paired image PSNR against the uncached samples, and at
toy scale the image PSNR against the converged sampler (each measured value with its 95%
interval), and whether the run is on the Pareto front of MACs vs the rows' primary quality axis
(FID, or the converged PSNR at toy scale: analysis.metrics.quality_column) or tied with it
(analysis.uncertainty). Step reduction (the uncached sampler at fewer steps) is
included. Markdown, one file per table, sorted by MACs, with a footnote on the marks.
"""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path

import pandas as pd

from .cli import results_to_files
from .labels import labelled
from .metrics import METRICS, PAIRED_AXES, higher_is_better, quality_column
from .paired import TWIN_NOTE, twin_delta
from .paper import BASELINES
from .uncertainty import (
    FRONT,
    TIE_MARK,
    TIED,
    UNKNOWN,
    decimals,
    front_status,
    interval,
    interval_text,
    oriented,
    pool_seeds,
    tied,
)

SKIP = {"name", "router", "train_if_missing", "seed"}


def settings(row: pd.Series) -> str:
    """The method's own parameters, as `key=value` (the run key's view of what it computes)."""
    from l2c_bench.caching import CACHE_METHODS

    name = row["config.cache.name"]
    if name == "none":
        return f"{int(row['config.steps'])} steps"
    keys = [f.name for f in fields(CACHE_METHODS[name])] if name in CACHE_METHODS else []
    parts = []
    for key in keys:
        value = row.get(f"config.cache.{key}")
        if key in SKIP or value is None or (isinstance(value, float) and pd.isna(value)):
            continue
        parts.append(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}")
    if name == "l2c" and row.get("config.cache.router") == "auto":
        parts.append(f"lam={row.get('config.router.lam'):g}")  # the learned router's lambda
    return ", ".join(parts)


FOOTNOTE = (f"Measured values: the mean over a point's seeds with its 95% Student-t interval, or one run's value "
            f"with its own interval; {UNKNOWN} = no interval recorded (none shown where no row has one). {TIE_MARK} = "
            f"not significantly different from the uncached sampler at the base NFE (the 95% intervals overlap). "
            f"Front: **yes** = on the Pareto front of MACs (exact) and the primary quality column; tied = dominated only by points whose 95% "
            f"intervals overlap it on both axes (with exact MACs: the same MACs), so not significantly off the front.")


def _cell(p: pd.Series, metric: str, places: int, recorded: set[str], uncached: pd.Series) -> str:
    """`value [low, high]` (`places` decimals, more if the interval needs them), with TIE_MARK
    after the value where that interval overlaps the `uncached` row's; `value [?]` where the row
    has no interval but `metric` is `recorded` (some row of the table has one), the bare value
    where none has; "" if no value."""
    value = p.get(metric)
    if value is None or pd.isna(value):
        return ""
    if value == float("inf"):
        return "inf"
    if metric not in recorded:
        return f"{value:.{places}f}"
    bounds = interval(p, metric)
    places = decimals(bounds, places)
    mark = TIE_MARK if p.name != uncached.name and tied(bounds, interval(uncached, metric)) else ""
    return f"{value:.{places}f}{mark} {interval_text(bounds, places)}"


def frontier_tables(results: pd.DataFrame) -> dict[str, str]:
    """{file stem: markdown} per (scale, features, model, resolution, base NFE)."""
    ok = results[results["status"] == "ok"] if "status" in results else results
    if ok.empty:
        return {}
    pooled = pool_seeds(ok).set_index("run_id", drop=False)  # with the seeds' per-sample records joined
    frame = labelled(pooled.reset_index(drop=True)).set_index("run_id")
    source = ok.set_index("run_id").loc[frame.index]  # the raw rows, aligned with the paper frame
    frame["settings"] = [settings(row) + ("" if seeds == 1 else f" ({seeds} seeds)")
                         for (_, row), seeds in zip(source.iterrows(), frame["seeds"], strict=True)]
    frame["sync"] = source.get("metrics.host_sync_per_evaluation")
    tables = {}
    for (scale, features, model, res), rows in frame.groupby(["scale", "features", "model", "resolution"]):
        for base in sorted(rows.loc[rows["method"].isin(BASELINES), "nfe"].unique()):
            uncached = rows[rows["method"].isin(BASELINES) & (rows["nfe"] == base)]
            points = rows[(rows["method"].isin(BASELINES) & (rows["nfe"] <= base))
                          | (~rows["method"].isin(BASELINES) & (rows["nfe"] == base))].dropna(subset=["macs_t"])
            for axis in PAIRED_AXES & set(points.columns):
                # a paired axis measures each row against its uncached twin: the uncached row, and a
                # row that reused nothing (the same MACs: bit-identical samples, an infinite PSNR the
                # row stores as None), sit at +inf
                identical = (points["method"].isin(BASELINES) & (points["nfe"] == base)) | (
                    points[axis].isna() & (points["macs_t"] == float(uncached.iloc[0]["macs_t"])))
                points.loc[identical, axis] = math.inf
            quality = quality_column(points)
            points = points.dropna(subset=[quality])
            if uncached.empty or points["method"].isin(BASELINES).all():
                continue  # a table needs a cached method at this base NFE
            reference = uncached.iloc[0]
            macs0 = float(reference["macs_t"])
            macs_intervals, q_intervals = ([interval(p, m) for _, p in points.iterrows()] for m in ("macs_t", quality))
            values, bounds = oriented(points[quality].tolist(), q_intervals, higher_is_better(quality))
            points = points.assign(front=front_status(points["macs_t"].tolist(), values, macs_intervals, bounds))
            extra = [quality] if quality != "fid" else []  # the primary axis, where it is not FID
            recorded = {m for m in ("speedup", "fid", "paired_psnr_db", *extra)
                        if any(interval(p, m) is not None for _, p in points.iterrows())}
            header = "".join(f" {METRICS[m][3]} {'↑' if higher_is_better(m) else '↓'} |" for m in extra)
            twin = pooled.loc[reference.name]
            column, factor = METRICS[quality][0].removeprefix("metrics."), METRICS[quality][1]
            lines = [f"### {model} {res}px, base NFE {base} ({scale} scale, {features} features)", "",
                     f"| method | settings | MACs speedup | measured speedup | FID | paired PSNR (dB) |{header} "
                     f"Δ {METRICS[quality][3]} vs uncached | front |",
                     "|---|---|---|---|---|---|" + "---|" * len(extra) + "---|---|"]
            for _, p in points.sort_values("macs_t").iterrows():
                step_reduction = p["method"] in BASELINES
                speed = "" if step_reduction else _cell(p, "speedup", 2, recorded, reference)
                sync = " (host sync / evaluation)" if p.get("sync") is True else ""
                front = {FRONT: "**yes**", TIED: "tied"}.get(p["front"], "")
                lines.append(f"| {p['series']}{sync} | {p['settings']} | {macs0 / p['macs_t']:.2f} | {speed} | "
                             f"{_cell(p, 'fid', 3, recorded, reference)} | "
                             f"{_cell(p, 'paired_psnr_db', 2, recorded, reference)} | "
                             + "".join(f"{_cell(p, m, 2, recorded, reference)} | " for m in extra)
                             + f"{twin_delta(pooled.loc[p.name], twin, column, factor)} | {front} |")
            lines += ["", FOOTNOTE, "", TWIN_NOTE]
            tables[f"frontier_{scale}_{features}_{model.replace('/', '')}_{res}_nfe{base}"] = "\n".join(lines) + "\n"
    return tables


def write_all(results: pd.DataFrame, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, text in frontier_tables(results).items():
        path = out / f"{stem}.md"
        path.write_text(text)
        written.append(path)
    return written


def main(argv=None) -> None:
    results_to_files(__doc__, write_all, argv, samples=True)


if __name__ == "__main__":
    main()
