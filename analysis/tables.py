"""The paper's tables regenerated from the results store, ours beside the paper's.

    python -m analysis.tables --results results --out analysis_out

For each paper table and each (scale, feature network) with results: `<table>_<scale>_<features>.md`
and `.tex` (booktabs). Paper scale: every paper row with ours, the paper's value and the
difference (ours - paper), "—" where we have no result yet, and our extra rows after the
paper's. Toy scale: ours only (the paper's numbers are for other models). Arrows give each
metric's direction; the best of ours per block (rows compared together) is bold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .cli import results_to_files
from .labels import paper_frame
from .metrics import METRICS, arrow, higher_is_better, shown
from .paper import BASELINES, TABLES, TableSpec, load_paper

MISSING = "—"


@dataclass
class Table:
    spec: TableSpec
    scale: str
    features: str
    frame: pd.DataFrame  # keys, block, then per metric: <m>, and at paper scale <m>_paper, <m>_delta
    caption: str

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


def build(spec: TableSpec, ours: pd.DataFrame, scale: str, features: str) -> Table:
    mine = _select(ours, spec)
    metrics = [m for m in spec.metrics if m in METRICS]
    rows = []
    if scale == "paper":
        paper = load_paper(spec)
        used = set()
        for _, p in paper.iterrows():
            mask = pd.Series([_key(r, spec.keys) == _key(p, spec.keys) for _, r in mine.iterrows()],
                             index=mine.index, dtype=bool)
            match = mine[mask]
            record = {k: p[k] for k in spec.keys}
            for m in metrics:
                mine_value = match[m].dropna().iloc[-1] if len(match) and match[m].notna().any() else None
                paper_value = p.get(m)
                paper_value = None if paper_value is None or pd.isna(paper_value) else float(paper_value)
                record[m] = mine_value
                record[f"{m}_paper"] = paper_value
                record[f"{m}_delta"] = (mine_value - paper_value) if None not in (mine_value, paper_value) else None
            used.update(match["run_id"])
            rows.append(record)
        for _, r in mine[~mine["run_id"].isin(used)].iterrows():  # ours that the paper does not have
            rows.append({**{k: r[k] for k in spec.keys}, **{m: r[m] for m in metrics},
                         **{f"{m}_paper": None for m in metrics}, **{f"{m}_delta": None for m in metrics}})
        caption = (f"{spec.title}. Paper scale, {features} features: ours, the paper's, and ours - paper; "
                   f"{MISSING} = no result yet.")
    else:
        ordered = mine.sort_values(list(spec.keys), kind="stable")
        rows = [{**{k: r[k] for k in spec.keys}, **{m: r[m] for m in metrics}} for _, r in ordered.iterrows()]
        caption = (f"{spec.title}. {scale.capitalize()} scale, {features} features (ours only: the paper's numbers "
                   f"are for the paper-scale models).")
    frame = pd.DataFrame(rows, columns=list(spec.keys) + [c for m in metrics for c in (
        [m, f"{m}_paper", f"{m}_delta"] if scale == "paper" else [m])])
    frame = frame.astype(object).where(frame.notna(), None)
    frame["block"] = _blocks(frame) if len(frame) else []
    return Table(spec, scale, features, frame, caption)


def build_all(results: pd.DataFrame) -> list[Table]:
    ours = paper_frame(results)
    tables = []
    if ours.empty:
        return tables
    for (scale, features), group in ours.groupby(["scale", "features"], dropna=False):
        for spec in TABLES:
            if scale == "paper" or len(_select(group, spec)):
                tables.append(build(spec, group, str(scale), str(features)))
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


def _shown(table: Table, metric: str) -> tuple[str, float]:
    """The metric's label and display factor in this table: one unit for ours and the paper's."""
    columns = [metric, f"{metric}_paper"] if table.scale == "paper" else [metric]
    return shown(metric, [v for c in columns for v in table.frame[c]])


def _header(table: Table) -> list[str]:
    header = list(table.spec.keys)
    for m in table.spec.metrics:
        label = f"{_shown(table, m)[0]} {arrow(m)}"
        header += [label, "paper", "Δ"] if table.scale == "paper" else [label]
    return header


def _cells(table: Table, bold) -> list[list[str]]:
    frame = table.frame.reset_index(drop=True)
    best = {m: _best(frame, m) for m in table.spec.metrics}
    factors = {m: _shown(table, m)[1] for m in table.spec.metrics}

    def scaled(value, m):
        return value if value is None or factors[m] == 1.0 else value * factors[m]

    out = []
    for i, row in frame.iterrows():
        cells = [_fmt(row[k]) for k in table.spec.keys]
        for m in table.spec.metrics:
            mine = _fmt(scaled(row[m], m), m)
            cells.append(bold(mine) if i in best[m] and mine != MISSING else mine)
            if table.scale == "paper":
                delta = scaled(row[f"{m}_delta"], m)
                cells += [_fmt(scaled(row[f"{m}_paper"], m), m), MISSING if delta is None else f"{delta:+.3g}"]
        out.append(cells)
    return out


def to_markdown(table: Table) -> str:
    header = _header(table)
    lines = [f"**{table.caption}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in _cells(table, lambda s: f"**{s}**")]
    return "\n".join(lines) + "\n"


def to_latex(table: Table) -> str:
    def tex(s: str) -> str:
        return (s.replace("\\", r"\textbackslash{}").replace("%", r"\%").replace("_", r"\_").replace("&", r"\&")
                .replace("↑", r"$\uparrow$").replace("↓", r"$\downarrow$").replace("Δ", r"$\Delta$")
                .replace(MISSING, "--"))

    header = _header(table)
    lines = [r"\begin{table}[t]", r"\centering", f"\\caption{{{tex(table.caption)}}}",
             f"\\begin{{tabular}}{{{'l' * len(table.spec.keys)}{'r' * (len(header) - len(table.spec.keys))}}}",
             r"\toprule", " & ".join(tex(h) for h in header) + r" \\", r"\midrule"]
    previous = None
    for block, cells in zip(table.frame["block"], _cells(table, lambda s: f"\\textbf{{{s}}}"), strict=True):
        if previous is not None and block != previous:
            lines.append(r"\midrule")
        previous = block
        lines.append(" & ".join(c if c.startswith("\\textbf") else tex(c) for c in cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
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
    results_to_files(__doc__, write_all, argv)


if __name__ == "__main__":
    main()
