"""Analysis on a synthetic results store with known values: tables, Pareto fronts, plots, report."""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ROOT
from matplotlib.colors import LogNorm

from analysis.tables import build_all, to_latex, to_markdown, write_all
from l2c_bench.records import load_results, write_row
from l2c_bench.runs.prepare import describe


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


def _recorded_figures(monkeypatch, module) -> dict:
    """Make `module.save_figure` keep each figure it writes, by file stem (the figure is closed
    after saving, but its artists and their data remain readable)."""
    figures = {}
    save = module.save_figure

    def recording(fig, out, stem, **kwargs):
        figures[stem] = fig
        return save(fig, out, stem, **kwargs)

    monkeypatch.setattr(module, "save_figure", recording)
    return figures


def _check_files(written, figures, dpi):
    """Each figure written as a real PNG of its size at `dpi`, and a PDF."""
    for path in written:
        data = path.read_bytes()
        if path.suffix == ".png":
            assert data[:8] == b"\x89PNG\r\n\x1a\n", path
            width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")  # IHDR
            inches = figures[path.stem].get_size_inches()
            assert (width, height) == (round(inches[0] * dpi), round(inches[1] * dpi)), path
        else:
            assert path.suffix == ".pdf" and data[:5] == b"%PDF-" and b"%%EOF" in data[-64:], path


def _series(ax) -> dict:
    """{label: (x, y)} of an axis' labelled lines (rounded: ms -> s leaves float noise)."""
    def values(data):
        return [round(float(v), 9) for v in data]

    return {line.get_label(): (values(line.get_xdata()), values(line.get_ydata()))
            for line in ax.get_lines() if not line.get_label().startswith("_")}


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


def _markdown_rows(text: str) -> tuple[list[str], list[list[str]]]:
    """A written markdown table: its header cells and its body rows' cells."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header, body = lines[0], lines[2:]  # lines[1] is the |---| separator
    return [c.strip() for c in header.strip("|").split("|")], [[c.strip() for c in r.strip("|").split("|")]
                                                                 for r in body]


def _by_metric(header: list[str], cells: list[str], keys: int) -> dict:
    """{metric label: (ours, paper, delta)} for a paper-scale row, {label: ours} for a toy row."""
    out = {}
    for i in range(keys, len(header)):
        if header[i] not in ("paper", "Δ"):
            out[header[i]] = tuple(cells[i:i + 3]) if header[i + 1:i + 2] == ["paper"] else cells[i]
    return out


def test_tables_are_written_as_markdown_and_latex(store, tmp_path):
    out = tmp_path / "out"
    written = write_all(store, out)
    # paper scale: every paper table (Table 8 holds hyperparameters, not results), ours or not;
    # toy scale: only the tables that hold a toy row (a DDIM and an L2C point of the toy DiT)
    paper_csvs = sorted(p for p in (ROOT / "analysis" / "paper_numbers").glob("table*.csv") if "hyperparams" not in p.name)
    stems = [f"{p.stem}_paper_inception" for p in paper_csvs] + [
        f"{name}_toy_toy" for name in ("table1_dit", "table4_cacheable_ratio", "table5_7_layer_dropout", "table9_lambda")]
    assert sorted(p.name for p in written) == sorted(f"{stem}{suffix}" for stem in stems for suffix in (".md", ".tex"))

    # Table 1 at paper scale: the paper's rows in its order with its values, then our extra row
    header, rows = _markdown_rows((out / "table1_dit_paper_inception.md").read_text())
    assert header[:4] == ["model", "resolution", "method", "nfe"]
    paper = pd.read_csv(ROOT / "analysis" / "paper_numbers" / "table1_dit.csv")
    keys = [tuple(str(v) for v in r) for r in paper[["model", "resolution", "method", "nfe"]].itertuples(index=False)]
    assert [tuple(r[:4]) for r in rows] == keys + [("DiT-XL/2", "256", "L2C", "30")]
    labels = {"latency_s": "Latency (s) ↓", "speedup": "Speedup ↑", "is": "IS ↑", "fid": "FID ↓",
              "sfid": "sFID ↓", "precision": "Precision (%) ↑", "recall": "Recall (%) ↑"}
    for (_, p), cells in zip(paper.iterrows(), rows, strict=False):
        by_metric = _by_metric(header, cells, 4)
        for column, label in labels.items():
            assert by_metric[label][1] == ("—" if pd.isna(p[column]) else f"{p[column]:.2f}"), (cells[:4], label)
    table = {tuple(r[:4]): _by_metric(header, r, 4) for r in rows}
    # ours from the store in the paper's units (ms -> s, fraction -> %), and ours - paper
    ddim20 = table[("DiT-XL/2", "256", "DDIM", "20")]
    assert ddim20["FID ↓"] == ("3.50", "3.48", "+0.02") and ddim20["Latency (s) ↓"] == ("2.90", "2.87", "+0.03")
    assert ddim20["Precision (%) ↑"] == ("79.00", "78.76", "+0.24") and ddim20["IS ↑"] == ("—", "223.50", "—")
    assert ddim20["Speedup ↑"] == ("1.00", "1.00", "+0")
    # the best of ours in the block (DDIM 20, DDIM 16, L2C 20) is bold, and only there
    l2c20, ddim16 = table[("DiT-XL/2", "256", "L2C", "20")], table[("DiT-XL/2", "256", "DDIM", "16")]
    assert l2c20["FID ↓"] == ("**3.40**", "3.46", "-0.06") and l2c20["Speedup ↑"] == ("**1.26**", "1.27", "-0.01")
    assert ddim16["FID ↓"] == ("4.70", "4.68", "+0.02") and ddim16["Latency (s) ↓"] == ("2.31", "2.30", "+0.01")
    assert table[("DiT-XL/2", "256", "DDIM", "50")]["FID ↓"] == ("—", "2.26", "—")  # no result yet
    assert table[("DiT-XL/2", "256", "L2C", "30")]["FID ↓"] == ("3.00", "—", "—")  # ours only
    assert sum("**" in c for r in rows for c in r) == 4  # MACs, latency, speedup and FID of L2C 20

    # the LaTeX file: the same cells (booktabs, -- for missing, \textbf for bold), a rule between blocks
    tex = (out / "table1_dit_paper_inception.tex").read_text().splitlines()
    assert tex[0] == r"\begin{table}[t]" and tex[-1] == r"\end{table}" and r"\bottomrule" in tex
    body = tex[tex.index(r"\toprule") + 2:tex.index(r"\bottomrule")]
    tex_rows = [[c.strip() for c in line.removesuffix(r" \\").split(" & ")] for line in body if line != r"\midrule"]
    md_as_tex = [[("--" if c == "—" else rf"\textbf{{{c[2:-2]}}}" if c.startswith("**") else c) for c in r] for r in rows]
    assert tex_rows == md_as_tex
    # a rule under the header, then one between each of the 7 blocks: the 250/50/40-step rows,
    # NFE 20, NFE 10, 512 px, DiT-L/2 at 50 and at 20, our extra row
    assert body.count(r"\midrule") == 1 + 6

    # toy scale: ours only, no paper columns, sorted by the keys, bold per block
    header, rows = _markdown_rows((out / "table1_dit_toy_toy.md").read_text())
    assert "paper" not in header and [r[:4] for r in rows] == [["DiT-toy", "32", "DDIM", "20"], ["DiT-toy", "32", "L2C", "20"]]
    ddim, l2c = (_by_metric(header, r, 4) for r in rows)
    assert (ddim["FID ↓"], ddim["Latency (s) ↓"], ddim["Speedup ↑"]) == ("**20.00**", "0.10", "1.00")
    assert (l2c["FID ↓"], l2c["Latency (s) ↓"], l2c["Speedup ↑"]) == ("21.00", "**0.07**", "**1.40**")


def test_pareto_front_is_the_undominated_set():
    from analysis.pareto import pareto_front

    cost = [1.0, 2.0, 3.0, 2.5, 1.5, 3.0]
    fid = [5.0, 3.0, 2.0, 3.5, 5.0, 2.0]
    assert pareto_front(cost, fid) == [True, True, True, False, False, True]  # ties on both stay


def test_speed_quality_and_threshold_plots(tmp_path, monkeypatch):
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
    figures = _recorded_figures(monkeypatch, pareto)
    written = pareto.write_all(results, tmp_path / "out")
    # base NFE 10 and 16 hold step reduction only (nothing to compare): no Figure 4 for them
    fig4, fig6 = "fig4_paper_inception_DiT-XL2_256_nfe20", "fig6_paper_inception_DiT-XL2_256_nfe20"
    assert sorted(p.name for p in written) == sorted(f"{s}{x}" for s in (fig4, fig6) for x in (".png", ".pdf"))
    _check_files(written, figures, dpi=130)
    # Figure 4, latency: each series' points sorted by latency (s), the front of all seven points,
    # the uncached NFE-20 point as dashed lines
    left, right = figures[fig4].axes
    assert _series(left) == {
        "DDIM (step reduction)": ([1.43, 2.3, 2.87], [12.4, 4.7, 3.5]),
        "L2C": ([2.0, 2.26], [3.9, 3.46]),
        "Heuristic (bottom)": ([2.2, 2.5], [6.0, 4.0]),
        "Pareto front": ([1.43, 2.0, 2.26], [12.4, 3.9, 3.46]),  # d10, L2C at 0.5, L2C at 0.1
        "uncached, NFE 20": ([2.87, 2.87], [0, 1]),
    }
    front = next(line for line in left.get_lines() if line.get_label() == "Pareto front")
    assert front.get_drawstyle() == "steps-post"
    assert [line.get_ydata()[0] for line in left.get_lines() if line.get_label().startswith("_")] == [3.5]
    # MACs: the same points and front (whatever unit the axis uses, x is proportional to MACs)
    macs = {"DDIM (step reduction)": [1140.0, 1830.0, 2288.0], "L2C": [1600.0, 1780.0],
            "Heuristic (bottom)": [1750.0, 2000.0], "Pareto front": [1140.0, 1600.0, 1780.0],
            "uncached, NFE 20": [2288.0, 2288.0]}
    on_macs = _series(right)
    assert set(on_macs) == set(macs)
    unit = on_macs["L2C"][0][0] / 1600.0
    for label, (x, y) in on_macs.items():
        assert x == pytest.approx([unit * m for m in macs[label]], rel=1e-9), label
        if label != "uncached, NFE 20":
            assert y == _series(left)[label][1], label
    # Figure 6: FID and speedup against the threshold, one curve for the one lambda
    fid_axis, speedup_axis = figures[fig6].axes
    assert _series(fid_axis) == {"lambda = 5e-06": ([0.1, 0.5], [3.46, 3.9])}
    assert _series(speedup_axis) == {"lambda = 5e-06": ([0.1, 0.5], [1.27, 1.4])}
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


def test_toy_pareto_plots_the_primary_quality_axis_and_its_front_prefers_higher_psnr(tmp_path, monkeypatch):
    """Toy rows whose primary quality is the image PSNR against the converged sampler are plotted
    on it (FID against the data cannot rank them); higher is better there, so the front keeps the
    cheapest point of each PSNR level, and a row without the axis sends the plot back to FID."""
    from analysis import pareto

    def toy(run_id, psnr, latency, macs, cache="none", steps=20, **extra):
        return _row(run_id, scale="toy", arch="DiT-toy", cache=cache, steps=steps, fid=3.0, latency_ms=latency,
                    macs_g=macs, primary_quality="converged_image_psnr_db", converged_image_psnr_db=psnr,
                    converged_image_psnr_db_ci_low=psnr - 0.1, converged_image_psnr_db_ci_high=psnr + 0.1, **extra)

    rows = [toy("d20", 27.5, 690.0, 2.0), toy("d16", 25.4, 586.0, 1.6, steps=16),
            toy("l2c", 27.8, 582.0, 1.4, cache="l2c", lam=1e-4), toy("worse", 24.0, 600.0, 1.5, cache="fora")]
    for r in rows:
        write_row(tmp_path / "rows", r["run_id"], r)
    figures = _recorded_figures(monkeypatch, pareto)
    pareto.write_all(load_results(tmp_path / "rows"), tmp_path / "out")
    left, _ = figures["fig4_toy_toy_DiT-toy_32_nfe20"].axes
    assert left.get_ylabel() == "Image PSNR vs converged (dB) (higher is better)"
    series = _series(left)
    assert series["L2C"] == ([0.582], [27.8]) and series["DDIM (step reduction)"][1] == [25.4, 27.5]
    assert series["Pareto front"] == ([0.582], [27.8])  # L2C: cheaper and better than every other point
    assert "uncached, 95% interval" in {t.get_text() for t in left.get_legend().get_texts()}
    mixed = load_results(tmp_path / "rows").assign(**{"metrics.primary_quality": ["fid", None, None, None]})
    assert pareto.quality_column(pareto.paper_frame(mixed)) == "fid"
    # the frontier table ranks on the same axis: its column, and L2C alone on the front
    from analysis.frontier import frontier_tables

    table = frontier_tables(load_results(tmp_path / "rows"))["frontier_toy_toy_DiT-toy_32_nfe20"].splitlines()
    assert table[2].endswith("| Image PSNR vs converged (dB) ↑ | Δ Image PSNR vs converged (dB) vs uncached | front |")
    on_front = [line.split("|")[1].strip() for line in table[4:] if line.endswith("| **yes** |")]
    assert on_front == ["L2C"] and any("| 24.00 [23.90, 24.10] | " in line for line in table)
    # toy video rows (no FID): their frame PSNR against the converged video is the axis
    video = load_results(tmp_path / "rows").assign(**{"metrics.primary_quality": "converged_frame_psnr_db",
                                                      "metrics.converged_frame_psnr_db": [27.5, 25.4, 27.8, 24.0]})
    assert pareto.quality_column(pareto.paper_frame(video)) == "converged_frame_psnr_db"


def test_router_heatmaps_for_official_and_learned_routers(tmp_path, monkeypatch):
    """The official routers' heatmaps hold the paper's Table 4: per branch, the share of cache-step
    entries at or below the threshold (reused) is the paper's MHSA/FFN remove ratio."""
    from analysis import routers
    from l2c_bench.caching import load_router

    shipped = routers.default_routers()
    official = [p for p in shipped if p.name.startswith("official_")]
    assert [p.stem for p in official] == ["official_dit_ddim20", "official_dit_ddim50", "official_uvit_dpm20",
                                          "official_uvit_dpm50"]
    figures = _recorded_figures(monkeypatch, routers)
    written = routers.write_all(official, tmp_path)
    assert sorted(p.name for p in written) == sorted(f"fig5_router_{p.stem}{x}" for p in official for x in (".png", ".pdf"))
    _check_files(written, figures, dpi=120)
    table4 = pd.read_csv(ROOT / "analysis" / "paper_numbers" / "table4_cacheable_ratio.csv")
    assert len(table4) == len(official)
    for _, paper in table4.iterrows():
        dit = paper["model"] == "DiT-XL/2"
        name = f"official_dit_ddim{paper['nfe']}" if dit else f"official_uvit_dpm{paper['nfe']}"
        fig = figures[f"fig5_router_{name}"]
        attention, mlp = (ax.images[0].get_array() for ax in fig.axes[:2])
        nfe, threshold, blocks = int(paper["nfe"]), float(paper["threshold"]), 28 if dit else 29
        # DDIM: a cache step at every odd evaluation; DPM-Solver-2: every other solver step's first evaluation
        steps = range(1, nfe, 2) if dit else range(2, nfe, 2)
        assert attention.shape == mlp.shape == (len(steps), blocks), name
        # each row: sigmoid of the router row for that evaluation (DDIM's rows count the respaced
        # timestep down, DPM-Solver-2's count solver steps), entries 2b + j = block b, branch j
        rows = [nfe - 1 - n for n in steps] if dit else [n // 2 for n in steps]
        shown = torch.sigmoid(load_router(routers.ROUTER_DIR / f"{name}.pt")[rows].float()).view(len(steps), blocks, 2)
        np.testing.assert_allclose(attention, shown[:, :, 0].numpy(), rtol=1e-6)
        np.testing.assert_allclose(mlp, shown[:, :, 1].numpy(), rtol=1e-6)
        assert attention.size + mlp.size == paper["cache_step_branches"]
        assert int((attention <= threshold).sum() + (mlp <= threshold).sum()) == paper["cached_branches"], name
        assert float((attention <= threshold).mean()) == pytest.approx(paper["mhsa_remove_ratio"], abs=5e-5)
        assert float((mlp <= threshold).mean()) == pytest.approx(paper["ffn_remove_ratio"], abs=5e-5)
        assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [f"eval {n}" for n in steps]
        assert [ax.get_title() for ax in fig.axes[:2]] == ["Attention branch", "MLP branch"]
        contours = [c for ax in fig.axes[:2] for c in ax.collections if hasattr(c, "levels")]
        assert [list(c.levels) for c in contours] == [[threshold], [threshold]]
        assert fig._suptitle.get_text().endswith(f"threshold {threshold:g} (white contour), "
                                                 f"cached ratio {paper['remove_ratio']:.3f}"), name
    # a learned router is drawn from its own metadata (model, NFE, lambda): the toy DiT, 8 blocks
    learned = next(p for p in shipped if p.name.startswith("DiTtoy-ddim-nfe20-lam0.0001"))
    fig = routers.heatmap(learned)
    assert fig.axes[0].images[0].get_array().shape == (10, 8)
    assert fig._suptitle.get_text().startswith("DiT-toy (learned, lam 0.0001), ddim NFE 20: threshold 0.1")


@pytest.mark.slow
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
    # the paper's claims the rows can test, each with its verdict (analysis.claims)
    from analysis.claims import check_all

    checks = check_all(store)
    assert len(checks) and {"claims.md", "claims.csv"} <= linked and "<h2>The paper's claims</h2>" in page
    for _, check in checks.iterrows():
        assert f"<td>{check['setting']}</td><td>" in page and f"<td>{check['verdict']}</td>" in page


@pytest.mark.slow
def test_layer_error_diagnostic_run_and_figure(tmp_path, monkeypatch):
    from conftest import compose_config

    from analysis import layer_error
    from l2c_bench.caching.methods.heuristic import branch_change
    from l2c_bench.models.loading import load_model
    from l2c_bench.run import run_point
    from l2c_bench.system.devices import resolve_device

    cfg = compose_config(tmp_path / "r", "tracker=none", "cache=none", "steps=6", "metrics.layer_error=true",
                         "metrics.num_samples=2", "metrics.fid=false", "metrics.timing_batch=1",
                         "metrics.timing_repeats=1", "metrics.converged_nfe=0")
    row = run_point(cfg)
    assert row["status"] == "ok", row.get("error")
    change = row["metrics.branch_change"]
    assert len(change) == 6 and len(change[0]) == 8 and len(change[0][0]) == 2
    assert all(v == 0 for block in change[0] for v in block) and min(v for b in change[1] for v in b) > 0
    # the row holds the measurement of the configured model, sampler and NFE (float64, exact through JSON)
    model, _ = load_model(describe(cfg).model, resolve_device(cfg.device))
    assert change == branch_change(model, "ddim", 6).tolist()
    figures = _recorded_figures(monkeypatch, layer_error)
    written = layer_error.write_all(load_results(tmp_path / "r"), tmp_path / "out")
    assert [p.name for p in written] == [f"fig3_layer_error_{row['run_id']}{x}" for x in (".png", ".pdf")]
    _check_files(written, figures, dpi=120)
    fig = figures[written[0].stem]
    # evaluations 1..5 (0 has no previous output) x 8 blocks, attention left, MLP right, log colours
    values = np.array(change)[1:]
    for ax, branch, name in zip(fig.axes[:2], (0, 1), ("Attention", "MLP"), strict=True):
        np.testing.assert_array_equal(ax.images[0].get_array(), values[:, :, branch])
        assert ax.get_title() == f"{name} branch"
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["1", "2", "3", "4", "5"]
    norm = fig.axes[0].images[0].norm
    assert isinstance(norm, LogNorm) and (norm.vmin, norm.vmax) == (values.min(), values.max())
    assert fig._suptitle.get_text().startswith("DiT-toy, ddim NFE 6: per-branch change")


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
    assert "interval=3" in fora and "| 2.50 | 2.30 | 3.200 | 20.00 | +0.2ᵐ [?] | **yes** |" in fora  # no FID intervals
    assert "10 steps" in u10 and u10.endswith("|  |")  # FORA is cheaper and better
    assert "threshold=0.2" in tea and tea.endswith("|  |")  # dominated by FORA and by 10-step DDIM
    assert u20.endswith("| **yes** |")  # the best FID


def test_toy_tables_lead_with_the_primary_axis_and_its_paired_difference_to_the_uncached_twin(tmp_path):
    """Table 1 at toy scale: the image PSNR against the converged sampler (the axis that decides
    there) comes first, and each row's paired difference to the uncached twin, from the per-sample
    records on the shared seeds, stands beside it."""
    from analysis.tables import build_all, to_markdown
    from l2c_bench.records import write_samples

    mse = {"toy-ddim": np.full(8, 0.01), "toy-l2c": np.full(8, 0.01) * np.linspace(1.1, 1.3, 8)}
    for run_id, cache in (("toy-ddim", "none"), ("toy-l2c", "l2c")):
        psnr = 10 * np.log10(4 / mse[run_id].mean())
        r = _row(run_id, scale="toy", arch="DiT-toy", cache=cache, fid=20.0, latency_ms=100.0, speedup=1.0,
                 macs_g=10.0, converged_image_psnr_db=psnr, converged_image_psnr_db_ci_low=psnr - 2,
                 converged_image_psnr_db_ci_high=psnr + 2, primary_quality="converged_image_psnr_db")
        write_row(tmp_path, run_id, r)
        write_samples(tmp_path / run_id, {"seed": np.arange(8), "converged_image_mse": mse[run_id]}, {"run_id": run_id})
    table = next(t for t in build_all(load_results(tmp_path, samples=True)) if t.stem == "table1_dit_toy_toy")
    assert table.metrics[0] == "converged_psnr_db" and table.delta == "converged_psnr_db"
    text = to_markdown(table)
    header = next(line for line in text.splitlines() if line.startswith("| model"))
    assert header.split(" | ")[4] == "Image PSNR vs converged (dB) ↑"  # first after the keys
    assert header.endswith("| Δ Image PSNR vs converged (dB) vs uncached |")
    l2c = next(line for line in text.splitlines() if "| L2C |" in line)
    expected = 10 * np.log10(mse["toy-ddim"].mean() / mse["toy-l2c"].mean())  # -0.79 dB on every seed's scale
    assert f"{expected:+.3g} [" in l2c and "ᵐ" not in l2c  # paired: no marginal mark
    assert "paired over the seeds both ran" in text
