"""The speed-quality frontier as a table: every method at a base NFE, with its settings.

    python -m analysis.frontier --results results --out analysis_out

For each (scale, features, model, resolution, base NFE): one row per run -- the method and its
own parameters (interval, order, ratio, threshold, ...), MACs and measured speedup against the
uncached sampler at the base NFE, FID, paired image PSNR against the uncached samples, and
whether the run is on the Pareto front of MACs vs FID. Step reduction (the uncached sampler at
fewer steps) is included. Markdown, one file per table, sorted by MACs.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pandas as pd

from .cli import results_to_files
from .labels import paper_frame
from .paper import BASELINES
from .pareto import pareto_front

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


def frontier_tables(results: pd.DataFrame) -> dict[str, str]:
    """{file stem: markdown} per (scale, features, model, resolution, base NFE)."""
    ok = results[results["status"] == "ok"] if "status" in results else results
    if ok.empty:
        return {}
    frame = paper_frame(ok).set_index("run_id")
    source = ok.set_index("run_id").loc[frame.index]  # the raw rows, aligned with the paper frame
    frame["settings"] = [settings(row) for _, row in source.iterrows()]
    frame["psnr"] = source.get("metrics.paired_image_psnr_db")
    frame["sync"] = source.get("metrics.host_sync_per_evaluation")
    tables = {}
    for (scale, features, model, res), rows in frame.groupby(["scale", "features", "model", "resolution"]):
        for base in sorted(rows.loc[rows["method"].isin(BASELINES), "nfe"].unique()):
            uncached = rows[rows["method"].isin(BASELINES) & (rows["nfe"] == base)]
            points = rows[(rows["method"].isin(BASELINES) & (rows["nfe"] <= base))
                          | (~rows["method"].isin(BASELINES) & (rows["nfe"] == base))].dropna(subset=["macs_t", "fid"])
            if uncached.empty or points["method"].isin(BASELINES).all():
                continue  # a table needs a cached method at this base NFE
            macs0 = float(uncached["macs_t"].iloc[0])
            points = points.assign(on_front=pareto_front(points["macs_t"].tolist(), points["fid"].tolist()))
            lines = [f"### {model} {res}px, base NFE {base} ({scale} scale, {features} features)", "",
                     "| method | settings | MACs speedup | measured speedup | FID | paired PSNR (dB) | front |",
                     "|---|---|---|---|---|---|---|"]
            for _, p in points.sort_values("macs_t").iterrows():
                step_reduction = p["method"] in BASELINES
                speed = "" if step_reduction or pd.isna(p["speedup"]) else f"{p['speedup']:.2f}"
                psnr = "" if pd.isna(p.get("psnr")) else ("inf" if p["psnr"] == float("inf") else f"{p['psnr']:.2f}")
                sync = " (host sync / evaluation)" if p.get("sync") is True else ""
                lines.append(f"| {p['series']}{sync} | {p['settings']} | {macs0 / p['macs_t']:.2f} | {speed} | "
                             f"{p['fid']:.3f} | {psnr} | {'**yes**' if p['on_front'] else ''} |")
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
    results_to_files(__doc__, write_all, argv)


if __name__ == "__main__":
    main()
