"""Speedup at matched quality (analysis/matched.py): the crossing of a method's quality curve with
a level, interpolated between the points that straddle it, its interval from the points', and
curves that never cross; the table from rows."""

import pandas as pd
import pytest

from analysis import matched
from analysis.matched import Point


def point(speedup, quality, s_half=0.0, q_half=0.0):
    return Point(speedup, (speedup - s_half, speedup + s_half), quality, (quality - q_half, quality + q_half), "")


def test_the_crossing_is_interpolated_between_the_straddling_points():
    curve = [point(1.5, 36.0), point(2.0, 32.0), point(3.0, 26.0)]
    found = matched.crossing(curve, 30.0, higher=True)
    assert found.value == pytest.approx(2.0 + (30 - 32) / (26 - 32) * 1.0)  # 2.333x
    assert found.low == found.high == pytest.approx(found.value)  # exact points: a zero-width interval
    # lower-is-better (LPIPS): the same geometry
    assert matched.crossing([point(1.5, 0.02), point(2.5, 0.08)], 0.05, higher=False).value == pytest.approx(2.0)


def test_the_interval_comes_from_the_points_intervals():
    found = matched.crossing([point(2.0, 32.0, 0.1, 1.0), point(3.0, 26.0, 0.1, 1.0)], 30.0, higher=True)
    # the corners: qualities (31 or 33, 25 or 27) and speedups (1.9 or 2.1, 2.9 or 3.1). Lowest: q (31, 25) put
    # the crossing 1/6 of the way, between speedups 1.9 and 2.9: 1.9 + 1/6; highest: q (33, 27), half way, 2.1 and 3.1
    assert found.low == pytest.approx(1.9 + 1 / 6, abs=1e-12) and found.high == pytest.approx(2.6, abs=1e-12)
    assert found.low < found.value < found.high


def test_curves_that_do_not_cross_say_so():
    better = matched.crossing([point(1.5, 40.0), point(2.0, 38.0)], 30.0, higher=True)
    assert better.bound == ">=" and better.value == 2.0 and str(better).startswith("≥ 2.00x")
    worse = matched.crossing([point(1.5, 20.0), point(2.0, 18.0)], 30.0, higher=True)
    assert worse.bound == "<" and str(worse) == "not reached"
    # a non-monotone curve: the fastest crossing is the one a user can have
    assert matched.crossing([point(1.5, 29.0), point(2.0, 31.0), point(3.0, 25.0)], 30.0, True).value == \
        pytest.approx(2.0 + 1 / 6)


def test_the_table_has_a_row_per_method_and_a_column_per_level():
    def row(run_id, cache, speedup, psnr, **config):
        out = {"run_id": run_id, "status": "ok", "config.scale.name": "toy", "config.scale.features": "toy",
               "config.model.arch": "DiT-toy", "config.model.vae": "none", "config.model.default_sampler": "ddim",
               "config.sampler.name": None, "config.cache.name": cache, "config.steps": 20,
               "metrics.speedup": speedup, "metrics.speedup_ci_low": speedup - 0.05,
               "metrics.speedup_ci_high": speedup + 0.05, "metrics.paired_image_psnr_db": psnr,
               "metrics.macs_g": 1.0 / speedup}
        out.update({f"config.cache.{k}": v for k, v in config.items()})
        return out

    rows = pd.DataFrame([row("u", "none", 1.0, None), row("f2", "fora", 1.9, 36.0, interval=2),
                         row("f3", "fora", 2.8, 31.0, interval=3), row("f4", "fora", 3.6, 27.0, interval=4)])
    tables = matched.matched_tables(rows, {"paired_image_psnr_db": ((30.0, 35.0), True, "PSNR vs uncached (dB)")})
    text = tables["matched_toy_DiT-toy_nfe20"]
    header = next(line for line in text.splitlines() if line.startswith("| method"))
    assert header == "| method | points | PSNR vs uncached (dB) ≥ 30 | PSNR vs uncached (dB) ≥ 35 |"
    fora = next(line for line in text.splitlines() if line.startswith("| FORA"))
    assert "| 3 | 3.00x [" in fora and "| 2.08x [" in fora  # 2.8 + (30 - 31) / (27 - 31) * 0.8; 1.9 + 0.2 * 0.9
    default = matched.matched_tables(rows)["matched_toy_DiT-toy_nfe20"]  # LEVELS: 20 and 25 dB
    assert "≥ 20 | PSNR vs uncached (dB) ≥ 25 |" in default and "≥ 3.60x (every point better)" in default
