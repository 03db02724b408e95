"""The paper's tables regenerated from the results store, ours beside the paper's.

    python -m analysis.tables --results results --out analysis_out

For each paper table and each (scale, feature network) with results: `<table>_<scale>_<features>.md`
and `.tex` (booktabs). Paper scale: every paper row with ours, the paper's value and the
difference (ours - paper), "—" where we have no result yet, and our extra rows after the
paper's. Toy scale: ours only (the paper's numbers are for other models). Arrows give each
metric's direction; the best of ours per block (rows compared together) is bold. Each measured
value of ours carries its 95% interval, and a tie mark where it is not significantly different
from the value it is compared with (`_compared`, analysis.uncertainty); a footnote says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .cli import results_to_files
from .labels import labelled
from .metrics import EXACT, METRICS, arrow, higher_is_better, quality_column, shown
from .paired import TWIN_NOTE, twin_delta
from .paper import BASELINES, TABLES, TableSpec, load_paper
from .uncertainty import (
    TIE_MARK,
    UNKNOWN,
    ci_columns,
    decimals,
    interval,
    interval_text,
    pool_seeds,
    tied,
)

MISSING = "—"


@dataclass
class Table:
    spec: TableSpec
    scale: str
    features: str
    # keys, block, then per metric: <m>, <m>_ci_low, <m>_ci_high, and at paper scale <m>_paper, <m>_delta
    frame: pd.DataFrame
    caption: str
    # the metrics shown: the rows' primary quality axis first where the paper's table lacks it
    # (at toy scale its FID, IS, precision and recall are flat across step counts), then the paper's
    metrics: list[str] = field(default_factory=list)
    delta: str | None = None  # the metric whose paired difference to the uncached twin is shown (`delta` column)

    @property
    def stem(self) -> str:
        return f"{self.spec.name}_{self.scale}_{self.features}"


def _select(ours: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    keep = ours["model"].str.startswith(spec.families)
    if spec.methods is not None:
        keep &= ours["method"].isin(spec.methods)
    if spec.caches is not None:
        keep &= ours["cache"].isin(spec.caches)
    return ours[keep]


def _key(row, keys) -> tuple:
    out = []
    for k in keys:
        v = row[k]
        out.append(round(float(v), 9) if isinstance(v, (int, float)) and not pd.isna(v) else v)
    return tuple(out)


def _blocks(frame: pd.DataFrame) -> list[int]:
    """A new block at every baseline row that follows a non-baseline, or at a new model/resolution."""
    blocks, block, previous = [], -1, None
    for _, row in frame.iterrows():
        group = (row.get("model"), row.get("resolution"))
        baseline = row.get("method") in BASELINES
        if previous is None or group != previous[0] or (baseline and not previous[1]):
            block += 1
        blocks.append(block)
        previous = (group, baseline)
    return blocks


def _ours(rows: pd.DataFrame, metrics) -> dict:
    """Per metric, ours and its interval columns: from the last of `rows` that has the metric."""
    record = {}
    for m in metrics:
        have = rows[rows[m].notna()]
        record.update({c: (None if have.empty else have[c].iloc[-1]) for c in (m, *ci_columns(m))})
    return record


def build(spec: TableSpec, ours: pd.DataFrame, scale: str, features: str, pooled: pd.DataFrame | None = None) -> Table:
    """One table; `pooled`: the store's rows with seeds pooled, indexed by run_id, with their
    per-sample records (the paired Δ to the uncached twin; None: no Δ column)."""
    mine = _select(ours, spec)
    primary = quality_column(mine) if len(mine) else "fid"
    metrics = ([primary] if primary not in spec.metrics else []) + [m for m in spec.metrics if m in METRICS]
    rows = []
    if scale == "paper":
        paper = load_paper(spec)
        used = set()
        for _, p in paper.iterrows():
            mask = pd.Series([_key(r, spec.keys) == _key(p, spec.keys) for _, r in mine.iterrows()],
                             index=mine.index, dtype=bool)
            match = mine[mask]
            record = {k: p[k] for k in spec.keys} | _ours(match, metrics)
            record["run_id"] = match["run_id"].iloc[-1] if len(match) else None
            for m in metrics:
                mine_value = record[m]
                paper_value = p.get(m)
                paper_value = None if paper_value is None or pd.isna(paper_value) else float(paper_value)
                record[f"{m}_paper"] = paper_value
                record[f"{m}_delta"] = (mine_value - paper_value) if None not in (mine_value, paper_value) else None
            used.update(match["run_id"])
            rows.append(record)
        for i, r in mine[~mine["run_id"].isin(used)].iterrows():  # ours that the paper does not have
            rows.append({**{k: r[k] for k in spec.keys}, "run_id": r["run_id"], **_ours(mine.loc[[i]], metrics),
                         **{f"{m}_paper": None for m in metrics}, **{f"{m}_delta": None for m in metrics}})
        caption = (f"{spec.title}. Paper scale, {features} features: ours, the paper's, and ours - paper; "
                   f"{MISSING} = no result yet.")
    else:
        ordered = mine.sort_values(list(spec.keys), kind="stable")
        rows = [{**{k: r[k] for k in spec.keys}, "run_id": r["run_id"], **_ours(ordered.loc[[i]], metrics)}
                for i, r in ordered.iterrows()]
        caption = (f"{spec.title}. {scale.capitalize()} scale, {features} features (ours only: the paper's numbers "
                   f"are for the paper-scale models).")
    frame = pd.DataFrame(rows, columns=list(spec.keys) + ["run_id"] + [c for m in metrics for c in (
        [m, *ci_columns(m), f"{m}_paper", f"{m}_delta"] if scale == "paper" else [m, *ci_columns(m)])])
    frame = frame.astype(object).where(frame.notna(), None)
    frame["block"] = _blocks(frame) if len(frame) else []
    delta = primary if pooled is not None and primary in METRICS else None
    if delta is not None:
        frame["delta"] = _twin_deltas(frame, mine, pooled, delta)
    return Table(spec, scale, features, frame, caption, metrics, delta)


def _twin_deltas(frame: pd.DataFrame, mine: pd.DataFrame, pooled: pd.DataFrame, metric: str) -> list[str]:
    """Per table row: its `metric` minus the uncached sampler's at the same model, resolution and
    NFE, paired over their shared seeds (frontier.twin_delta); "" where there is no such pair."""
    column, factor = METRICS[metric][0].removeprefix("metrics."), METRICS[metric][1]
    out = []
    for _, row in frame.iterrows():
        run = mine[mine["run_id"] == row.get("run_id")]
        if run.empty or run.iloc[0]["run_id"] not in pooled.index:
            out.append("")
            continue
        run = run.iloc[0]
        twins = mine[mine["method"].isin(BASELINES) & (mine["model"] == run["model"]) & (mine["nfe"] == run["nfe"])
                     & (mine["resolution"] == run["resolution"]) & mine["run_id"].isin(pooled.index)]
        texts = [twin_delta(pooled.loc[run["run_id"]], pooled.loc[twin], column, factor) for twin in twins["run_id"]]
        out.append(next((t for t in texts if t), ""))  # the twin that sampled alike (twin_delta: "" otherwise)
    return out


def build_all(results: pd.DataFrame) -> list[Table]:
    ok = results[results["status"] == "ok"] if "status" in results else results
    pooled = pool_seeds(ok)  # once: the paper frame's points and the rows the Δ column pairs
    ours = labelled(pooled)
    tables = []
    if ours.empty:
        return tables
    pooled = pooled.set_index("run_id", drop=False)
    for (scale, features), group in ours.groupby(["scale", "features"], dropna=False):
        for spec in TABLES:
            if scale == "paper" or len(_select(group, spec)):
                tables.append(build(spec, group, str(scale), str(features), pooled))
    return tables


def _fmt(value, metric: str | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, float):
        if metric in ("remove_ratio",):
            return f"{value:.4f}"
        return f"{value:.4g}" if abs(value) < 1e-2 and value != 0 else f"{value:.2f}"
    return str(value)


def _best(frame: pd.DataFrame, metric: str) -> set[int]:
    """Row positions holding the best of ours for `metric` within each block."""
    best = set()
    for _, group in frame.groupby("block"):
        values = group[metric].dropna()
        if len(values) > 1:
            target = values.max() if higher_is_better(metric) else values.min()
            best.update(frame.index.get_indexer(values[values == target].index))
    return best


def _compared(frame: pd.DataFrame, metric: str) -> dict[int, int]:
    """Row position -> the position of the row its `metric` value is compared with for the tie
    mark: the uncached sampler at the same model, resolution and NFE in this table; for a row
    with none here, the best of its block. Uncached rows and the best are compared with nothing."""
    same = [k for k in ("model", "resolution", "nfe") if k in frame]
    uncached = frame["method"].isin(BASELINES) if "method" in frame else pd.Series(False, index=frame.index)
    best = _best(frame, metric)
    compared = {}
    for i, row in frame.iterrows():
        if uncached[i] or row[metric] is None:
            continue
        reference = frame[uncached & frame[metric].notna() & (frame[same] == row[same]).all(axis=1)].index
        if len(reference):
            compared[i] = reference[0]
        else:
            block_best = [b for b in best if frame["block"][b] == row["block"]]
            if block_best and i not in block_best:
                compared[i] = block_best[0]
    return compared


def _measured(table: Table) -> list[str]:
    """The table's metrics that carry intervals (not exact) and have one in at least one row."""
    return [m for m in table.metrics if m not in EXACT and table.frame[ci_columns(m)[0]].notna().any()]


def _shown(table: Table, metric: str) -> tuple[str, float]:
    """The metric's label and display factor in this table: one unit for ours and the paper's."""
    columns = [metric, f"{metric}_paper"] if table.scale == "paper" else [metric]
    return shown(metric, [v for c in columns for v in table.frame[c]])


def _header(table: Table) -> list[str]:
    header = list(table.spec.keys)
    for m in table.metrics:
        label = f"{_shown(table, m)[0]} {arrow(m)}"
        header += [label, "paper", "Δ"] if table.scale == "paper" else [label]
    if table.delta is not None:
        header.append(f"Δ {_shown(table, table.delta)[0]} vs uncached")
    return header


def _cells(table: Table, bold, escape=lambda s: s) -> list[list[str]]:
    """The body's cells: `bold(text)` for the best of a block, `escape(text)` for every other text.
    Ours in a metric with intervals: `value† [low, high]`, `[?]` where the row has none."""
    frame = table.frame.reset_index(drop=True)
    best = {m: _best(frame, m) for m in table.metrics}
    factors = {m: _shown(table, m)[1] for m in table.metrics}
    measured = _measured(table)
    compared = {m: _compared(frame, m) for m in measured}

    def scaled(value, m):
        return value if value is None or factors[m] == 1.0 else value * factors[m]

    out = []
    for i, row in frame.iterrows():
        cells = [escape(_fmt(row[k])) for k in table.spec.keys]
        for m in table.metrics:
            mine, suffix = _fmt(scaled(row[m], m), m), ""
            if m in measured and mine != MISSING:
                bounds = interval(row, m)
                mark = TIE_MARK if i in compared[m] and tied(bounds, interval(frame.loc[compared[m][i]], m)) else ""
                if bounds is not None:  # as many decimals as the interval's width needs
                    bounds = scaled(bounds[0], m), scaled(bounds[1], m)
                    mine = f"{scaled(row[m], m):.{decimals(bounds, 2)}f}"
                suffix = f"{mark} {interval_text(bounds, decimals(bounds, 2))}"
            cells.append((bold(mine) if i in best[m] and mine != MISSING else escape(mine)) + escape(suffix))
            if table.scale == "paper":
                delta = scaled(row[f"{m}_delta"], m)
                cells += [escape(_fmt(scaled(row[f"{m}_paper"], m), m)),
                          escape(MISSING if delta is None else f"{delta:+.3g}")]
        if table.delta is not None:
            cells.append(escape(row["delta"]))
        out.append(cells)
    return out


def footnote(table: Table) -> list[str]:
    """What the marks in the table's cells mean (the same words under every rendering)."""
    metrics = [m for m in table.metrics if m in METRICS]
    measured, exact = _measured(table), [m for m in metrics if m in EXACT]
    lines = []
    if measured:
        lines += [f"Ours [95% interval]: the mean over a point's seeds with its Student-t interval, or one run's value "
                  f"with its own interval; {UNKNOWN} = no interval recorded.",
                  f"{TIE_MARK} = not significantly different (the 95% intervals overlap) from the uncached sampler at "
                  f"the same model, resolution and NFE, or, for a row without one here, from the best (bold) of its "
                  f"block."]
    unrecorded = [m for m in metrics if m not in EXACT and m not in measured and table.frame[m].notna().any()]
    if unrecorded:
        lines.append(f"No intervals recorded for {', '.join(_shown(table, m)[0] for m in unrecorded)} "
                     f"(rows written before intervals): point values only, no ties called.")
    if exact:
        lines.append(f"{', '.join(_shown(table, m)[0] for m in exact)}: counted from the schedule, exact.")
    if table.delta is not None:
        lines.append(TWIN_NOTE)
    return lines


def to_markdown(table: Table) -> str:
    header = _header(table)
    lines = [f"**{table.caption}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in _cells(table, lambda s: f"**{s}**")]
    lines += [""] + [f"- {line}" for line in footnote(table)]
    return "\n".join(lines) + "\n"


def to_latex(table: Table) -> str:
    def tex(s: str) -> str:
        return (s.replace("\\", r"\textbackslash{}").replace("%", r"\%").replace("_", r"\_").replace("&", r"\&")
                .replace("↑", r"$\uparrow$").replace("↓", r"$\downarrow$").replace("Δ", r"$\Delta$")
                .replace(TIE_MARK, r"$^\dagger$").replace(MISSING, "--"))

    header = _header(table)
    lines = [r"\begin{table}[t]", r"\centering", f"\\caption{{{tex(table.caption)}}}",
             f"\\begin{{tabular}}{{{'l' * len(table.spec.keys)}{'r' * (len(header) - len(table.spec.keys))}}}",
             r"\toprule", " & ".join(tex(h) for h in header) + r" \\", r"\midrule"]
    previous = None
    for block, cells in zip(table.frame["block"], _cells(table, lambda s: f"\\textbf{{{tex(s)}}}", tex), strict=True):
        if previous is not None and block != previous:
            lines.append(r"\midrule")
        previous = block
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if footnote(table):
        lines.append(r"\par\smallskip{\footnotesize " + " ".join(tex(line) for line in footnote(table)) + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def write_all(results: pd.DataFrame, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for table in build_all(results):
        for suffix, render in ((".md", to_markdown), (".tex", to_latex)):
            path = out / f"{table.stem}{suffix}"
            path.write_text(render(table))
            written.append(path)
    return written


def main(argv=None) -> None:
    results_to_files(__doc__, write_all, argv, samples=True)


if __name__ == "__main__":
    main()
