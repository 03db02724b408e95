"""MACs are shown in the unit their size calls for (T at paper scale, G or M for the toy models),
chosen in one place and used by every table and plot that shows them."""

import pytest

from l2c_bench.records import load_results, write_row


def test_the_macs_unit_follows_the_largest_value():
    from analysis.metrics import macs_unit

    assert macs_unit([2.29, 28.61]) == ("T", 1.0)  # paper scale: the paper's unit
    assert macs_unit([0.0006, 0.0021]) == ("G", 1e3)  # 0.6 .. 2.1 G
    assert macs_unit([0.0002, 0.0006]) == ("M", 1e6)  # 200 .. 600 M
    assert macs_unit([0.0000002]) == ("M", 1e6)  # nothing smaller than M
    assert macs_unit([None, float("nan"), 0.5]) == ("G", 1e3)  # missing values are left out
    assert macs_unit([]) == macs_unit([None]) == ("T", 1.0)


def _row(run_id, *, scale, arch, cache="none", steps=20, macs_g, fid=3.0, latency_ms=100.0, speedup=1.0):
    features = "inception" if scale == "paper" else "toy"
    return {"run_id": run_id, "status": "ok", "config.scale.name": scale, "config.scale.features": features,
            "config.model.arch": arch, "config.model.vae": "sd" if scale == "paper" else "none",
            "config.model.default_sampler": "ddim", "config.sampler.name": None, "config.cache.name": cache,
            "config.router.lam": 1e-4 if cache == "l2c" else None, "config.steps": steps,
            "metrics.features": features, "metrics.macs_g": macs_g, "metrics.fid": fid,
            "metrics.latency_ms": latency_ms, "metrics.speedup": speedup}


@pytest.fixture
def results(tmp_path):
    rows = [_row("toy20", scale="toy", arch="DiT-toy", macs_g=2.054),  # DiT-toy, 20 NFE
            _row("toy-l2c", scale="toy", arch="DiT-toy", cache="l2c", macs_g=1.6, fid=3.2, speedup=1.2),
            _row("toy10", scale="toy", arch="DiT-toy", steps=10, macs_g=1.027, fid=3.5),
            _row("paper20", scale="paper", arch="DiT-XL/2", macs_g=2288.0, fid=3.5),
            _row("paper-l2c", scale="paper", arch="DiT-XL/2", cache="l2c", macs_g=1781.0, fid=3.4, speedup=1.26)]
    for r in rows:
        write_row(tmp_path, r["run_id"], r)
    return load_results(tmp_path)


def _markdown(table):
    from analysis.tables import to_markdown

    lines = [line for line in to_markdown(table).splitlines() if line.startswith("| ")]
    split = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return split[0], split[1:]


def test_tables_show_macs_in_the_unit_of_their_values(results):
    from analysis.tables import build_all, to_latex

    tables = {t.stem: t for t in build_all(results)}
    header, rows = _markdown(tables["table1_dit_toy_toy"])
    column = header.index("MACs (G) ↓")  # 2.05 G, not 0.002054 T
    assert [r[column] for r in rows] == ["**1.03**", "2.05", "1.60"]  # DDIM 10 (the least), DDIM 20, L2C 20
    assert "MACs (G)" in to_latex(tables["table1_dit_toy_toy"])
    # paper scale: the paper's unit, ours, the paper's and the difference all in T
    header, rows = _markdown(tables["table1_dit_paper_inception"])
    column = header.index("MACs (T) ↓")
    ddim20 = next(r for r in rows if r[:4] == ["DiT-XL/2", "256", "DDIM", "20"])
    assert ddim20[column:column + 3] == ["2.29", "2.29", "-0.002"]


def test_the_speed_quality_plot_shows_macs_in_the_unit_of_its_points(results):
    from analysis.labels import paper_frame
    from analysis.pareto import figure4

    points = paper_frame(results)
    toy = figure4(points[points["scale"] == "toy"], title="toy", base_nfe=20)
    assert toy.axes[1].get_xlabel() == "MACs per image (G)"
    l2c = next(line for line in toy.axes[1].get_lines() if line.get_label() == "L2C")
    assert list(l2c.get_xdata()) == pytest.approx([1.6])  # in G
    paper = figure4(points[points["scale"] == "paper"], title="paper", base_nfe=20)
    assert paper.axes[1].get_xlabel() == "MACs per image (T)"
    l2c = next(line for line in paper.axes[1].get_lines() if line.get_label() == "L2C")
    assert list(l2c.get_xdata()) == pytest.approx([1.781])  # in T
