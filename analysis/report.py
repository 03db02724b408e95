"""One static HTML page with every table and figure for a results folder.

    python -m analysis.report --results results --out analysis_out    # -> analysis_out/index.html

Runs `analysis.tables`, `analysis.claims`, `analysis.pareto`, `analysis.layer_error` and `analysis.routers` (the routers learned into
`<results>/_routers/` and the shipped ones), then links every file they wrote, and shows the
Hydra sweep configs (`<results>/_hydra/*/multirun.yaml`) that produced the rows.
"""

from __future__ import annotations

import argparse
import html
from pathlib import Path

from l2c_bench.records import load_results

from . import claims, frontier, layer_error, matched, pareto, routers, tables


def _html_table(table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in tables._header(table))
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
                   for cells in tables._cells(table, lambda s: f"<b>{html.escape(s)}</b>", html.escape))
    notes = "".join(f"<li>{html.escape(line)}</li>" for line in tables.footnote(table))
    return f"<table><caption>{html.escape(table.caption)}</caption><tr>{head}</tr>{body}</table><ul>{notes}</ul>"


def write_report(results_dir: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    results = load_results(results_dir, samples=True, skip_corrupt=True)
    built = tables.build_all(results)
    table_files = tables.write_all(results, out)
    frontier_files = frontier.write_all(results, out)
    matched_files = matched.write_all(results, out)
    checks = claims.check_all(results)
    claim_files = claims.write_all(results, out) if len(checks) else []
    figures = pareto.write_all(results, out) + layer_error.write_all(results, out)
    learned = sorted((results_dir / "_routers").glob("*.pt")) if (results_dir / "_routers").is_dir() else []
    figures += routers.write_all(learned + routers.default_routers(), out)
    parts = ["<!doctype html><meta charset='utf-8'><title>l2c-bench report</title>",
             "<style>body{font-family:sans-serif;max-width:1400px;margin:auto}table{border-collapse:collapse;"
             "margin:1em 0;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
             "caption{font-weight:bold;text-align:left}img{max-width:100%}</style>",
             f"<h1>l2c-bench report</h1><p>{len(results)} rows from <code>{html.escape(str(results_dir))}</code></p>",
             "<h2>Tables</h2>"]
    for table in built:
        links = " ".join(f"<a href='{table.stem}{s}'>{s[1:]}</a>" for s in (".md", ".tex"))
        parts.append(_html_table(table) + f"<p>{links}</p>")
    if len(checks):  # the paper's claims, with our numbers and a verdict each (analysis.claims)
        head = "".join(f"<th>{h}</th>" for h in ("claim", "source", "setting", "ours (95% intervals)", "paper",
                                                  "verdict", "why", "comparison", "decides at"))
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c[k]))}</td>" for k in
                                        ("claim", "source", "setting", "ours", "paper", "verdict", "why",
                                         "comparison", "decide_at")) + "</tr>"
                       for _, c in checks.iterrows())
        parts.append(f"<h2>The paper's claims</h2><table><tr>{head}</tr>{body}</table>"
                     f"<p><a href='claims.md'>md</a> <a href='claims.csv'>csv</a></p>")
    if matched_files:  # each method's speedup at fixed quality levels (analysis.matched)
        parts.append("<h2>Speedup at matched quality</h2>" + "".join(
            f"<pre>{html.escape(f.read_text())}</pre>" for f in matched_files))
    if frontier_files:
        parts.append("<h2>Speed-quality frontiers</h2><ul>" + "".join(
            f"<li><a href='{f.name}'>{html.escape(f.stem)}</a></li>" for f in frontier_files) + "</ul>")
    parts.append("<h2>Figures</h2>")
    for png in [f for f in figures if f.suffix == ".png"]:
        pdf = png.with_suffix(".pdf").name
        parts.append(f"<figure><img src='{png.name}' alt='{png.stem}'><figcaption>{png.stem} "
                     f"(<a href='{pdf}'>pdf</a>)</figcaption></figure>")
    parts.append("<h2>Sweep configs</h2>")
    for config in sorted((results_dir / "_hydra").glob("*/multirun.yaml")):
        parts.append(f"<details><summary>{html.escape(config.parent.name)}</summary><pre>"
                     f"{html.escape(config.read_text())}</pre></details>")
    index = out / "index.html"
    index.write_text("\n".join(parts))
    assert all(f.parent == out for f in table_files + frontier_files + matched_files + claim_files + figures)
    return index


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--out", default="analysis_out")
    args = parser.parse_args(argv)
    if not Path(args.results).is_dir():
        parser.exit(1, f"error: --results {args.results}: no such folder (the results store)\n")
    print(write_report(Path(args.results), Path(args.out)))


if __name__ == "__main__":
    main()
