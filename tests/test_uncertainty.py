"""Intervals in the analysis, on hand-made rows with known numbers: seeds pooled into a t-interval,
ties called where intervals overlap, the Pareto front's tied points, interval cells, error bars."""

import math

import numpy as np
import pandas as pd
import pytest

from analysis.labels import paper_frame
from analysis.uncertainty import FRONT, TIED, front_status, interval, tied

# the Student t 0.975 quantile by degrees of freedom, in closed form: 1 -> tan(pi (p - 1/2)),
# 2 -> (2p - 1) / sqrt(2 p (1 - p))
T_975 = {1: math.tan(math.pi * 0.475), 2: 0.95 / math.sqrt(2 * 0.975 * 0.025)}


def _row(run_id, *, cache="none", steps=20, seed=None, lam=None, threshold=None, **metrics):
    """A toy-scale ok row of the toy DiT (ours-only tables) with the given metrics."""
    row = {"run_id": run_id, "status": "ok", "config.scale.name": "toy", "config.scale.features": "toy",
           "config.model.arch": "DiT-toy", "config.model.vae": "none", "config.model.default_sampler": "ddim",
           "config.sampler.name": None, "config.cache.name": cache, "config.cache.threshold": threshold,
           "config.router.lam": lam, "config.steps": steps, "metrics.features": "toy",
           "schema_version": 3}  # seeds draw disjoint noise: rows of several seeds are independent repeats
    if seed is not None:
        row["config.seed"] = seed
    if cache == "l2c" and lam is not None:
        row["config.cache.router"] = "auto"  # a learned router: its lambda defines the point
    row.update({f"metrics.{k}": v for k, v in metrics.items()})
    return row


def _t_interval(values):
    """Mean and 95% Student-t interval, computed here independently of the module."""
    values = np.asarray(values, dtype=float)
    half = T_975[len(values) - 1] * values.std(ddof=1) / math.sqrt(len(values))
    return values.mean(), values.mean() - half, values.mean() + half


def test_seeds_pool_into_one_point_with_a_t_interval():
    fids, latencies = [3.0, 3.6, 3.3], [100.0, 112.0, 103.0]
    rows = [_row(f"d20-s{s}", seed=s, fid=f, fid_ci_low=f - 0.01, fid_ci_high=f + 0.01, latency_ms=t, macs_g=10.0)
            for s, f, t in zip((2, 0, 1), fids, latencies, strict=True)]
    rows[0]["config.device"] = "cuda"  # where it ran does not define the point
    rows[1]["provenance.host"] = "other"
    # an L2C point over two seeds: one row written when rows kept every method's cache keys (an
    # inert `ratio`), one after; still one point
    rows += [_row("l2c-s0", cache="l2c", seed=0, lam=1e-4, fid=4.0, macs_g=6.0),
             _row("l2c-s1", cache="l2c", seed=1, lam=1e-4, fid=4.4, macs_g=6.0, is_ci_low=48.0, is_ci_high=52.5,
                  **{"is": 50.0})]
    rows[-2]["config.cache.ratio"] = 0.5
    # one seed with its own interval; one old row without any; a different threshold: another point
    rows += [_row("d10", steps=10, seed=0, fid=5.0, fid_ci_low=4.5, fid_ci_high=5.6, latency_ms=50.0,
                  latency_ms_ci_low=49.0, latency_ms_ci_high=52.0),
             _row("d16-old", steps=16, fid=4.2),
             _row("l2c-t", cache="l2c", seed=0, lam=1e-4, threshold=0.2, fid=4.1)]
    frame = paper_frame(pd.DataFrame(rows)).set_index("run_id")
    assert sorted(frame.index) == ["d10", "d16-old", "d20-s0", "l2c-s0", "l2c-t"]  # first seed's id
    assert frame["seeds"].to_dict() == {"d20-s0": 3, "l2c-s0": 2, "d10": 1, "d16-old": 1, "l2c-t": 1}

    d20 = frame.loc["d20-s0"]
    mean, low, high = _t_interval(fids)  # the seeds' own (narrow) intervals are not used
    assert (d20["fid"], d20["fid_ci_low"], d20["fid_ci_high"]) == pytest.approx((mean, low, high), rel=1e-12)
    assert high - low == pytest.approx(2 * 4.3027 * 0.3 / math.sqrt(3), rel=1e-4)  # s = 0.3
    mean, low, high = _t_interval(latencies)
    assert (d20["latency_s"], d20["latency_s_ci_low"], d20["latency_s_ci_high"]) == pytest.approx(
        (mean / 1e3, low / 1e3, high / 1e3), rel=1e-12)  # in the paper's unit, s
    assert interval(d20, "macs_t") == (0.01, 0.01)  # exact: zero width
    l2c = frame.loc["l2c-s0"]
    assert (l2c["fid"], l2c["fid_ci_low"], l2c["fid_ci_high"]) == pytest.approx(_t_interval([4.0, 4.4]), rel=1e-12)
    assert l2c["is"] == 50.0 and interval(l2c, "is") == (48.0, 52.5)  # only seed 1 has it: its value and interval
    assert interval(frame.loc["d10"], "fid") == (4.5, 5.6)  # one seed: the row's own interval
    assert interval(frame.loc["d10"], "latency_s") == pytest.approx((0.049, 0.052))
    old = frame.loc["d16-old"]
    assert old["fid"] == 4.2 and interval(old, "fid") is None  # unknown, never invented
    assert pd.isna(old["fid_ci_low"]) and pd.isna(old["fid_ci_high"])


def test_ties_are_overlapping_known_intervals():
    assert tied((1.0, 2.0), (2.0, 3.0)) and tied((1.0, 3.0), (1.5, 2.0))  # touching, nested
    assert not tied((1.0, 2.0), (2.1, 3.0)) and not tied((2.1, 3.0), (1.0, 2.0))  # a clear difference
    assert not tied(None, (1.0, 2.0)) and not tied((1.0, 2.0), None)  # unknown is never a tie


def test_pareto_front_marks_points_tied_with_it():
    # (cost, quality loss): A, B on the front; C dominated by B only, overlapping it on both axes;
    # D dominated by B, overlapping in cost but clearly worse in quality; E dominated by B
    # (overlapping) and by A (not overlapping in cost); F dominated by B, no intervals recorded
    cost = [1.0, 2.0, 2.1, 2.1, 2.2, 2.3]
    quality = [5.0, 3.0, 3.2, 4.0, 5.0, 3.1]
    cost_ci = [(0.9, 1.1), (1.9, 2.1), (2.0, 2.2), (2.0, 2.2), (2.1, 2.3), None]
    quality_ci = [(4.8, 5.2), (2.8, 3.2), (3.0, 3.4), (3.9, 4.1), (2.9, 5.1), None]
    assert front_status(cost, quality, cost_ci, quality_ci) == [FRONT, FRONT, TIED, "", "", ""]
    assert front_status(cost, quality) == [FRONT, FRONT, "", "", "", ""]  # no intervals: no ties
    # touching the dominator's interval is overlapping; a hair beyond is not
    assert front_status([1.0, 1.0], [2.0, 2.5], [(1.0, 1.0)] * 2, [(1.9, 2.1), (2.1, 2.9)]) == [FRONT, TIED]
    assert front_status([1.0, 1.0], [2.0, 2.5], [(1.0, 1.0)] * 2, [(1.9, 2.1), (2.11, 2.9)]) == [FRONT, ""]


def _markdown(text: str) -> tuple[dict, list[str]]:
    """{method or lambda cell and nfe: {header: cell}} of a written table, and its footnote lines."""
    lines = text.splitlines()
    table = [line for line in lines if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]
    notes = [line for line in lines if line.startswith("- ")]
    return {(r[2], r[3]): dict(zip(header, r, strict=True)) for r in rows}, notes


def test_table_cells_carry_intervals_and_tie_marks():
    from analysis.tables import build_all, to_latex, to_markdown

    rows = []
    for seed, fid in enumerate([20.0, 21.0, 22.0]):  # uncached DDIM 20 over three seeds: FID 21 [18.52, 23.48]
        rows.append(_row(f"d20-s{seed}", seed=seed, fid=fid, latency_ms=100.0 + seed, speedup=1.0, macs_g=10.0))
    rows += [
        # L2C 20: latency and speedup clearly better (no mark), FID inside the noise (†)
        _row("l2c", cache="l2c", lam=1e-4, fid=21.5, fid_ci_low=20.5, fid_ci_high=22.5, latency_ms=70.0,
             latency_ms_ci_low=68.0, latency_ms_ci_high=72.0, speedup=1.43, speedup_ci_low=1.38,
             speedup_ci_high=1.48, macs_g=6.0),
        _row("d16-old", steps=16, fid=24.0, latency_ms=80.0, macs_g=8.0),  # written before intervals
        # Table 9 (no uncached row): each lambda against the best of the block (the toy DiT's L2C rows)
        _row("l2c-lam2", cache="l2c", steps=10, lam=2e-4, fid=22.2, fid_ci_low=21.4, fid_ci_high=23.0, macs_g=5.0),
        _row("l2c-lam5", cache="l2c", steps=10, lam=5e-4, fid=30.0, fid_ci_low=29.0, fid_ci_high=31.0, macs_g=4.0),
    ]
    tables = {t.stem: t for t in build_all(pd.DataFrame(rows))}

    md = to_markdown(tables["table1_dit_toy_toy"])
    cells, notes = _markdown(md)
    ddim, l2c, old = cells[("DDIM", "20")], cells[("L2C", "20")], cells[("DDIM", "16")]
    assert ddim["FID ↓"] == "**21.00** [18.52, 23.48]" and ddim["Speedup ↑"] == "1.00 [1.00, 1.00]"
    # 101 ms ± 4.303 / sqrt(3) = ± 2.5 ms: written with the decimals its width needs
    assert ddim["Latency (s) ↓"] == "0.101 [0.099, 0.103]"
    assert l2c["FID ↓"] == "21.50† [20.50, 22.50]"  # overlaps the uncached DDIM 20: a tie
    assert l2c["Latency (s) ↓"] == "**0.070** [0.068, 0.072]" and l2c["Speedup ↑"] == "**1.43** [1.38, 1.48]"
    assert l2c["MACs (G) ↓"] == "6.00"  # exact: no interval (the lambda rows are cheaper: not bold)
    assert old["FID ↓"] == "24.00 [?]" and old["Speedup ↑"] == "—"  # unknown, not invented
    assert [h for h, c in l2c.items() if "†" in c] == ["FID ↓"]  # the only tie of L2C 20
    assert not [c for c in (*ddim.values(), *old.values()) if "†" in c]  # uncached: compared with nothing
    assert any(n.startswith("- † = not significantly different (the 95% intervals overlap) from the uncached sampler")
               for n in notes)
    assert "- No intervals recorded for IS" not in md  # IS has no values at all here
    tex = to_latex(tables["table1_dit_toy_toy"])
    assert r"21.50$^\dagger$ [20.50, 22.50]" in tex and r"\textbf{0.070} [0.068, 0.072]" in tex
    assert r"\footnotesize Ours [95\% interval]" in tex

    lam, _ = _markdown(to_markdown(tables["table9_lambda_toy_toy"]))  # keys: model, resolution, nfe, lambda
    by_lambda = {key[1]: cells for key, cells in lam.items()}
    assert by_lambda["0.0001"]["FID ↓"] == "**21.50** [20.50, 22.50]"  # the best: compared with nothing
    assert by_lambda["0.0002"]["FID ↓"] == "22.20† [21.40, 23.00]"  # overlaps the best
    assert by_lambda["0.0005"]["FID ↓"] == "30.00 [29.00, 31.00]"  # clearly worse


def test_frontier_table_lists_points_tied_with_the_front():
    from analysis.frontier import frontier_tables

    rows = [_row("u20", fid=3.0, fid_ci_low=2.8, fid_ci_high=3.15, macs_g=2.0, speedup=1.0),
            _row("u10", steps=10, fid=3.5, macs_g=1.0),
            _row("fora", cache="fora", fid=3.30, fid_ci_low=3.10, fid_ci_high=3.40, macs_g=1.25, speedup=1.6,
                 speedup_ci_low=1.5, speedup_ci_high=1.7),
            # the same MACs as FORA and worse FID, but inside FORA's interval: tied with the front
            _row("tea", cache="teacache", threshold=0.2, fid=3.35, fid_ci_low=3.25, fid_ci_high=3.45, macs_g=1.25,
                 speedup=1.5, speedup_ci_low=1.45, speedup_ci_high=1.55),
            # the same MACs, FID clearly worse than FORA's: off the front
            _row("tea2", cache="teacache", threshold=0.4, fid=3.9, fid_ci_low=3.8, fid_ci_high=4.0, macs_g=1.25)]
    text = frontier_tables(pd.DataFrame(rows))["frontier_toy_toy_DiT-toy_32_nfe20"]
    body = {line.split(" | ")[1]: line for line in text.splitlines()
            if line.startswith("| ") and "settings" not in line}  # by the settings cell
    fora, tea, tea2 = body[""], body["threshold=0.2"], body["threshold=0.4"]
    # FORA's FID overlaps the uncached u20's: not significantly worse (†); TeaCache's does not
    # then the difference to the uncached u20: marginal (ᵐ: no per-sample records), each end's distances
    # in quadrature: FORA +0.3, down by sqrt(0.2^2 + 0.15^2) = 0.25 (its low end, u20's high end), up by
    # sqrt(0.1^2 + 0.2^2) = 0.2236
    assert fora.endswith("| 1.60 [1.50, 1.70] | 3.300† [3.100, 3.400] |  | +0.3ᵐ [+0.05, +0.524] | **yes** |")
    assert tea.endswith("| 1.50 [1.45, 1.55] | 3.350 [3.250, 3.450] |  | +0.35ᵐ [+0.17, +0.574] | tied |")
    assert tea2.endswith("| 3.900 [3.800, 4.000] |  | +0.9ᵐ [+0.72, +1.12] |  |")
    assert body["10 steps"].endswith("| 3.500 [?] |  | +0.5ᵐ [?] | **yes** |")  # the cheapest; its interval unknown
    assert body["20 steps"].endswith("| 3.000 [2.800, 3.150] |  |  | **yes** |")
    assert "tied = dominated only by points whose 95% intervals overlap it on both axes" in text


def test_speed_quality_plot_draws_intervals_and_tied_points():
    from analysis import pareto

    rows = [_row("d20", fid=3.5, fid_ci_low=3.3, fid_ci_high=3.7, latency_ms=2870.0, latency_ms_ci_low=2850.0,
                 latency_ms_ci_high=2900.0, macs_g=2288.0),
            _row("d10", steps=10, fid=12.4, latency_ms=1430.0, macs_g=1140.0),  # no intervals: no bars
            _row("l2c", cache="l2c", lam=1e-4, threshold=0.1, fid=3.46, fid_ci_low=3.36, fid_ci_high=3.56,
                 latency_ms=2260.0, latency_ms_ci_low=2240.0, latency_ms_ci_high=2290.0, macs_g=1780.0,
                 speedup=1.27, speedup_ci_low=1.25, speedup_ci_high=1.29),
            # dominated on latency by L2C at 0.1, overlapping it on both axes: tied with the front
            _row("l2c.2", cache="l2c", lam=1e-4, threshold=0.2, fid=3.5, fid_ci_low=3.40, fid_ci_high=3.60,
                 latency_ms=2280.0, latency_ms_ci_low=2250.0, latency_ms_ci_high=2310.0, macs_g=1790.0,
                 speedup=1.25, speedup_ci_low=1.2, speedup_ci_high=1.3)]
    points = paper_frame(pd.DataFrame(rows))
    fig = pareto.figure4(points, title="t", base_nfe=20)
    latency_axis, macs_axis = fig.axes

    def bars(ax, label):
        """The [start, end] points of each bar labelled `label`, rounded (ms -> s leaves float noise)."""
        found = [c for c in ax.collections if c.get_label() == label]
        return sorted([tuple(round(float(v), 9) for v in point) for point in segment] for c in found
                      for segment in c.get_segments())

    assert bars(latency_axis, "_L2C y interval") == [[(2.26, 3.36), (2.26, 3.56)], [(2.28, 3.4), (2.28, 3.6)]]
    assert bars(latency_axis, "_L2C x interval") == [[(2.24, 3.46), (2.29, 3.46)], [(2.25, 3.5), (2.31, 3.5)]]
    assert bars(latency_axis, "_DDIM (step reduction) y interval") == [[(2.87, 3.3), (2.87, 3.7)]]  # not d10
    assert bars(macs_axis, "_L2C x interval") == []  # MACs are exact
    assert len(bars(macs_axis, "_L2C y interval")) == 2
    # latency: L2C at 0.2 is tied with the front (ringed); MACs: L2C at 0.2 costs more (exact) -> dominated
    ringed = [line for line in latency_axis.get_lines() if line.get_label().startswith("tied with the front")]
    assert len(ringed) == 1 and list(ringed[0].get_xdata()) == pytest.approx([2.28])
    assert not [line for line in macs_axis.get_lines() if line.get_label().startswith("tied with the front")]
    band = next(p for p in latency_axis.patches if p.get_label() == "uncached, 95% interval")
    assert (band.get_y(), band.get_y() + band.get_height()) == pytest.approx((3.3, 3.7))  # FID of uncached NFE 20
    # Figure 6: speedup against the threshold, with each point's interval
    fig6 = pareto.figure6(points[points["cache"] == "l2c"], title="t")
    assert bars(fig6.axes[1], "_lambda = 0.0001 y interval") == [[(0.1, 1.25), (0.1, 1.29)], [(0.2, 1.2), (0.2, 1.3)]]
