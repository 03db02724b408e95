"""Analysis on a synthetic results store with known values: tables, Pareto fronts, plots, report."""

import pytest

from analysis.tables import build_all, to_latex, to_markdown, write_all
from l2c_bench.records import load_results, write_row


def _row(run_id, *, scale="paper", arch="DiT-XL/2", cache="none", sampler="ddim", steps=20, lam=None, threshold=None,
         ratio=None, shifted=None, vae="sd", **metrics):
    features = "inception" if scale == "paper" else "toy"
    row = {"run_id": run_id, "status": "ok", "config.scale.name": scale, "config.scale.features": features,
           "config.model.arch": arch, "config.model.vae": vae if scale == "paper" else "none",
           "config.model.default_sampler": sampler, "config.sampler.name": None, "config.cache.name": cache,
           "config.cache.threshold": threshold, "config.cache.ratio": ratio, "config.cache.shifted": shifted,
           "config.router.lam": lam, "config.steps": steps, "metrics.features": features}
    row.update({f"metrics.{k}": v for k, v in metrics.items()})
    return row


@pytest.fixture
def store(tmp_path):
    rows = [
        _row("ddim20", fid=3.50, latency_ms=2900.0, speedup=1.0, macs_g=2288.0, precision=0.79),
        _row("l2c20", cache="l2c", fid=3.40, latency_ms=2300.0, speedup=1.26, macs_g=1781.0, lam=5e-6, threshold=0.1),
        _row("ddim16", steps=16, fid=4.70, latency_ms=2310.0, speedup=1.25, macs_g=1830.0),
        _row("extra", cache="l2c", steps=30, fid=3.0, latency_ms=4000.0, speedup=1.2, macs_g=3000.0, lam=5e-6),
        _row("toy-ddim", scale="toy", arch="DiT-toy", fid=20.0, latency_ms=100.0, speedup=1.0, macs_g=10.0),
        _row("toy-l2c", scale="toy", arch="DiT-toy", cache="l2c", fid=21.0, latency_ms=70.0, speedup=1.4, macs_g=6.0,
             lam=1e-4),
        {"run_id": "broken", "status": "failed", "config.scale.name": "paper", "config.model.arch": "DiT-XL/2"},
    ]
    for r in rows:
        write_row(tmp_path, r["run_id"], r)
    return load_results(tmp_path)


def _table(tables, stem):
    return next(t for t in tables if t.stem == stem)


def test_paper_table_has_ours_the_paper_and_the_difference(store):
    tables = build_all(store)
    t1 = _table(tables, "table1_dit_paper_inception")
    f = t1.frame.set_index(["model", "resolution", "method", "nfe"])
    ddim20 = f.loc[("DiT-XL/2", 256, "DDIM", 20)]
    assert ddim20["fid"] == 3.50 and ddim20["fid_paper"] == 3.48 and ddim20["fid_delta"] == pytest.approx(0.02)
    assert ddim20["latency_s"] == pytest.approx(2.9) and ddim20["latency_s_paper"] == 2.87
    assert ddim20["macs_t"] == pytest.approx(2.288) and ddim20["precision"] == pytest.approx(79.0)
    assert f.loc[("DiT-XL/2", 256, "L2C", 20)]["fid"] == 3.40
    missing = f.loc[("DiT-XL/2", 256, "DDIM", 50)]
    assert missing["fid"] is None and missing["fid_paper"] == 2.26 and missing["fid_delta"] is None
    assert len(t1.frame) == 20 + 1  # the paper's 20 rows, then our extra row (L2C at NFE 30)
    assert ("DiT-XL/2", 256, "L2C", 30) in f.index and f.loc[("DiT-XL/2", 256, "L2C", 30)]["fid_paper"] is None
    md = to_markdown(t1)
    assert "| DiT-XL/2 | 256 | DDIM | 20 |" in md and "FID ↓ | paper | Δ" in md and "—" in md
    assert "**3.40**" in md  # the best FID of its block (DDIM 20, DDIM 16, L2C 20)
    assert "**3.50**" not in md
    tex = to_latex(t1)
    assert r"\toprule" in tex and r"\textbf{3.40}" in tex and "FID $\\downarrow$" in tex


def test_scales_and_feature_networks_are_never_mixed(store):
    tables = build_all(store)
    stems = {t.stem for t in tables}
    assert "table1_dit_toy_toy" in stems and "table1_dit_paper_inception" in stems
    toy = _table(tables, "table1_dit_toy_toy")
    assert set(toy.frame["model"]) == {"DiT-toy"} and "fid_paper" not in toy.frame
    paper = _table(tables, "table1_dit_paper_inception")
    assert "DiT-toy" not in set(paper.frame["model"])
    assert "Toy scale, toy features" in toy.caption and "Paper scale, inception features" in paper.caption
    # a paper table with no results yet still lists every paper row, all missing
    t2 = _table(tables, "table2_uvit_paper_inception")
    assert len(t2.frame) == 6 and t2.frame["fid"].isna().all() and t2.frame["fid_paper"].notna().all()


def test_tables_are_written_as_markdown_and_latex(store, tmp_path):
    written = write_all(store, tmp_path / "out")
    names = {p.name for p in written}
    assert {"table1_dit_paper_inception.md", "table1_dit_paper_inception.tex", "table1_dit_toy_toy.md"} <= names
    assert all(p.stat().st_size > 100 for p in written)


def test_pareto_front_is_the_undominated_set():
    from analysis.pareto import pareto_front

    cost = [1.0, 2.0, 3.0, 2.5, 1.5, 3.0]
    fid = [5.0, 3.0, 2.0, 3.5, 5.0, 2.0]
    assert pareto_front(cost, fid) == [True, True, True, False, False, True]  # ties on both stay


def test_speed_quality_and_threshold_plots(tmp_path):
    from analysis import pareto

    rows = [_row("d20", fid=3.5, latency_ms=2870.0, macs_g=2288.0, speedup=1.0),
            _row("d16", steps=16, fid=4.7, latency_ms=2300.0, macs_g=1830.0, speedup=1.25),
            _row("d10", steps=10, fid=12.4, latency_ms=1430.0, macs_g=1140.0, speedup=2.0),
            _row("l2c", cache="l2c", fid=3.46, latency_ms=2260.0, macs_g=1780.0, speedup=1.27, lam=5e-6, threshold=0.1),
            _row("l2c.5", cache="l2c", fid=3.9, latency_ms=2000.0, macs_g=1600.0, speedup=1.4, lam=5e-6, threshold=0.5),
            _row("h1", cache="heuristic", ratio=0.2, fid=4.0, latency_ms=2500.0, macs_g=2000.0, speedup=1.15),
            _row("h2", cache="heuristic", ratio=0.4, fid=6.0, latency_ms=2200.0, macs_g=1750.0, speedup=1.3)]
    for r in rows:
        r["config.cache.strategy"] = "bottom"
        write_row(tmp_path / "store", r["run_id"], r)
    results = load_results(tmp_path / "store")
    written = pareto.write_all(results, tmp_path / "out")
    names = sorted(p.name for p in written)
    assert "fig4_paper_inception_DiT-XL2_256_nfe20.png" in names and "fig4_paper_inception_DiT-XL2_256_nfe20.pdf" in names
    assert "fig6_paper_inception_DiT-XL2_256_nfe20.png" in names
    assert all(p.stat().st_size > 5000 for p in written)
    points = pareto.paper_frame(results)
    fig = pareto.figure4(points[(points.nfe <= 20)], title="t", base_nfe=20)
    left, right = fig.axes
    assert left.get_xlabel() == "Latency (s, one batch)" and right.get_xlabel() == "MACs per image (T)"
    assert left.get_ylabel().startswith("FID")
    labels = {t.get_text() for t in left.get_legend().get_texts()}
    assert {"DDIM (step reduction)", "L2C", "Heuristic (bottom)", "Pareto front", "uncached, NFE 20"} <= labels
    # the same method keeps its colour in every plot, whichever other series share it
    fewer = pareto.figure4(points[(points.nfe <= 20) & (points.series != "Heuristic (bottom)")], title="t", base_nfe=20)

    def line_colours(figure, label):
        return [tuple(line.get_color()) for ax in figure.axes for line in ax.get_lines() if line.get_label() == label]

    l2c = line_colours(fig, "L2C") + line_colours(fewer, "L2C")
    assert len(l2c) == 4 and set(l2c) == {tuple(pareto.colour("L2C"))}
    assert set(line_colours(fig, "Heuristic (bottom)")) == {tuple(pareto.colour("Heuristic (bottom)"))} != {l2c[0]}


def test_router_heatmaps_for_official_and_learned_routers(tmp_path):
    from analysis import routers

    shipped = routers.default_routers()
    assert any(p.name.startswith("official_dit") for p in shipped) and any("toy" in p.name for p in shipped)
    fig = routers.heatmap(shipped[0])
    assert "cached ratio" in fig._suptitle.get_text() and fig.axes[0].get_title() == "Attention branch"
    written = routers.write_all(shipped[:2], tmp_path)
    assert len(written) == 4 and all(p.stat().st_size > 5000 for p in written)


def test_html_report_links_every_file(store, tmp_path):
    import re

    from analysis.report import write_report

    hydra = tmp_path / "results" / "_hydra" / "2026-01-01_00-00-00"
    hydra.mkdir(parents=True)
    (hydra / "multirun.yaml").write_text("hydra:\n  sweeper:\n    params:\n      steps: 10,20\n")
    for _, r in store.iterrows():
        write_row(tmp_path / "results", r["run_id"], {k: v for k, v in r.items() if v == v})
    index = write_report(tmp_path / "results", tmp_path / "report")
    page = index.read_text()
    linked = set(re.findall(r"(?:href|src)='([^']+)'", page))
    files = {p.name for p in (tmp_path / "report").iterdir() if p.name != "index.html"}
    assert linked == files  # every file linked, every link a file
    assert "table1_dit_paper_inception.md" in linked and "steps: 10,20" in page
    assert "<b>3.40</b>" in page


def test_layer_error_diagnostic_run_and_figure(tmp_path):
    from conftest import compose_config

    from analysis import layer_error
    from l2c_bench.run import run_point

    row = run_point(compose_config(tmp_path / "r", "tracker=none", "cache=none", "steps=6", "metrics.layer_error=true",
                                   "metrics.num_samples=2", "metrics.fid=false", "metrics.timing_batch=1",
                                   "metrics.timing_repeats=1"))
    assert row["status"] == "ok", row.get("error")
    change = row["metrics.branch_change"]
    assert len(change) == 6 and len(change[0]) == 8 and len(change[0][0]) == 2
    assert all(v == 0 for block in change[0] for v in block) and min(v for b in change[1] for v in b) > 0
    written = layer_error.write_all(load_results(tmp_path / "r"), tmp_path / "out")
    assert [p.suffix for p in written] == [".png", ".pdf"] and written[0].stat().st_size > 5000


def test_rows_from_the_wandb_mirror_read_like_the_local_store(store):
    """A stand-in for wandb.Api: runs carry the flattened config and the metrics summary."""
    from types import SimpleNamespace

    from analysis.sources import wandb_rows

    local = store[store.status == "ok"]
    runs = []
    for _, r in local.iterrows():
        config = {k.removeprefix("config."): v for k, v in r.items() if k.startswith("config.") and v == v}
        summary = {k.removeprefix("metrics."): v for k, v in r.items() if k.startswith("metrics.") and v == v}
        runs.append(SimpleNamespace(name=r["run_id"], state="finished", config=config,
                                    summary={**summary, "_runtime": 3.0, "samples": "<image>"}))
    api = SimpleNamespace(runs=lambda path: runs if path == "me/l2c-bench" else [])
    rows = wandb_rows("l2c-bench", "me", api=api)
    assert len(rows) == len(local) and set(rows.status) == {"ok"} and "metrics._runtime" not in rows
    mirrored = {t.stem: t.frame for t in build_all(rows)}
    for table in build_all(local):
        assert mirrored[table.stem].equals(table.frame), table.stem


def test_frontier_table_lists_methods_with_settings_and_the_front(tmp_path):
    from analysis.frontier import frontier_tables

    rows = [
        _row("u20", scale="toy", arch="DiT-toy", fid=3.0, macs_g=2.0, speedup=1.0),
        _row("u10", scale="toy", arch="DiT-toy", steps=10, fid=3.5, macs_g=1.0),
        _row("fora3", scale="toy", arch="DiT-toy", cache="fora", fid=3.2, macs_g=0.8, speedup=2.3,
             paired_image_psnr_db=20.0),
        _row("tea", scale="toy", arch="DiT-toy", cache="teacache", threshold=0.2, fid=3.6, macs_g=1.25, speedup=1.5,
             paired_image_psnr_db=25.0, host_sync_per_evaluation=True),
    ]
    rows[2]["config.cache.interval"] = 3
    for r in rows:
        write_row(tmp_path, r["run_id"], r)
    tables = frontier_tables(load_results(tmp_path))
    assert list(tables) == ["frontier_toy_toy_DiT-toy_32_nfe20"]  # base NFE 10 has no cached method
    lines = tables["frontier_toy_toy_DiT-toy_32_nfe20"].splitlines()
    body = [line for line in lines if line.startswith("| ") and not line.startswith("| method")]
    assert [line.split(" | ")[0] for line in body] == ["| FORA", "| DDIM (step reduction)",
                                                        "| TeaCache (host sync / evaluation)", "| DDIM (step reduction)"]
    fora, u10, tea, u20 = body
    assert "interval=3" in fora and "| 2.50 | 2.30 | 3.200 | 20.00 | **yes** |" in fora
    assert "10 steps" in u10 and u10.endswith("|  |")  # FORA is cheaper and better
    assert "threshold=0.2" in tea and tea.endswith("|  |")  # dominated by FORA and by 10-step DDIM
    assert u20.endswith("| **yes** |")  # the best FID
