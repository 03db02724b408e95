"""Paired verdicts (analysis/paired.py): the paired interval's coverage and width on synthetic
paired data, exact values on hand-made records, set metrics through their jackknife
replicates, the marginal fallback, equivalence decisions inside, across and beyond the margin,
the sample count that would decide, and the interval functions pinned to exact numbers."""

import math

import numpy as np
import pytest

from analysis import paired
from analysis.paired import Contrast, Side
from l2c_bench.metrics import intervals as iv
from l2c_bench.records.samples import SampleRecord

TRIALS = 200
COVERAGE = (0.95 - 3 * math.sqrt(0.95 * 0.05 / TRIALS), min(1.0, 0.95 + 3 * math.sqrt(0.95 * 0.05 / TRIALS)))
# Student-t quantiles t(0.975, df), written out: an interval built with 1.96 instead fails the pins below
T3, T2, T9 = 3.1824463052837078, 4.302652729749462, 2.262157162798205


def record(seeds, **columns):
    columns = {k: np.asarray(v, np.float64) for k, v in columns.items()}
    return SampleRecord({"seed": np.asarray(seeds, np.int64), **columns},
                        {"format": 1, "peak_to_peak": {"converged": 4.0}, "jackknife": {}})


def side(value, low=None, high=None, samples=None, metric="converged_image_mse", n=64):
    row = {f"metrics.{metric}": value, f"metrics.{metric}_ci_low": low, f"metrics.{metric}_ci_high": high,
           "metrics.num_samples": n}
    return Side(row, samples)


# --- exact values ------------------------------------------------------------------------------


def test_interval_functions_pinned_to_exact_values():
    # jackknife of 4 replicates [1, 2, 3, 4] around 2.5: se^2 = 3/4 * 5, half-width t(0.975, 3) * se
    low, high = iv.jackknife_bounds(2.5, [1, 2, 3, 4])
    half = T3 * math.sqrt(0.75 * 5)
    assert (low, high) == pytest.approx((2.5 - half, 2.5 + half), abs=1e-12)
    assert half == pytest.approx(6.162781, abs=1e-6)
    # Student-t interval of [1, 2, 3]: sd 1, half-width t(0.975, 2) / sqrt(3)
    from analysis.uncertainty import t_interval

    assert t_interval([1.0, 2.0, 3.0]) == pytest.approx((2.0, 2.0 - T2 / math.sqrt(3), 2.0 + T2 / math.sqrt(3)),
                                                        abs=1e-12)
    # the Inception Score's 10 splits: mean 10, std (ddof 0) 1 -> sd (ddof 1) 1 * sqrt(10 / 9)
    assert iv.split_mean_bounds(10.0, 1.0, 10) == pytest.approx((10 - T9 / 3, 10 + T9 / 3), abs=1e-12)
    # Wilson 3 of 10 (z = 1.959963984540054), solved by hand
    z = 1.959963984540054
    center = (0.3 + z * z / 20) / (1 + z * z / 10)
    half = z * math.sqrt(0.3 * 0.7 / 10 + z * z / 400) / (1 + z * z / 10)
    assert iv.wilson_interval(3, 10) == pytest.approx((center - half, center + half), abs=1e-12)
    assert iv.wilson_interval(3, 10) == pytest.approx((0.107791, 0.603222), abs=1e-6)
    # median of 10 timings: P(Bin(10, 1/2) <= 1) = 11/1024 <= 0.025 < P(<= 2): the 2nd and 9th order statistics
    assert iv.median_interval(list(range(1, 11))) == (2, 9)


def test_a_paired_difference_on_hand_made_records_is_exact():
    """Four samples in four groups: the jackknife of a difference of means is the paired t-interval
    of the per-sample differences d = [-1, 0, 1, 2] (mean 0.5, sd 1.2910, se 0.6455)."""
    a = side(2.5, samples=record([0, 1, 2, 3], converged_image_mse=[1, 2, 3, 4]))
    b = side(2.0, samples=record([0, 1, 2, 3], converged_image_mse=[2, 2, 2, 2]))
    c = paired.difference(a, b, "converged_image_mse", groups=4)
    se = np.std([-1, 0, 1, 2], ddof=1) / 2
    assert c.paired and c.samples == 4
    assert (c.value, c.low, c.high) == pytest.approx((0.5, 0.5 - T3 * se, 0.5 + T3 * se), abs=1e-12)
    # the PSNR of the mean MSE (the rows' PSNR): 10 log10(peak^2 / mse), peak 2 for images
    with_psnr = [Side({**s.row, "metrics.converged_image_psnr_db": 0.0}, s.record) for s in (a, b)]
    p = paired.difference(*with_psnr, "converged_image_psnr_db", groups=4)
    assert p.value == pytest.approx(10 * math.log10(4 / 2.5) - 10 * math.log10(4 / 2.0), abs=1e-12)


def test_samples_are_matched_by_seed_not_by_position():
    a = side(0, samples=record([5, 1, 9, 3, 7], converged_image_mse=[50, 10, 90, 30, 70]))
    b = side(0, samples=record([1, 3, 5, 7, 9, 11], converged_image_mse=[11, 31, 51, 71, 91, 999]))
    c = paired.difference(a, b, "converged_image_mse", groups=5)
    assert c.samples == 5 and c.value == pytest.approx(-1.0) and c.low == pytest.approx(-1.0)  # d = -1 on every seed


def test_set_metrics_pair_through_their_replicates_on_the_same_groups():
    seeds = np.arange(6)
    meta = {"format": 1, "jackknife": {"groups": 3, "seed": 0, "replicates": {"fid": [10.0, 11.0, 12.0]}}}
    other = {"format": 1, "jackknife": {"groups": 3, "seed": 0, "replicates": {"fid": [9.0, 9.5, 10.5]}}}
    a = Side({"metrics.fid": 11.0}, SampleRecord({"seed": seeds}, meta))
    b = Side({"metrics.fid": 9.6}, SampleRecord({"seed": seeds}, other))
    c = paired.difference(a, b, "fid")
    d = np.array([1.0, 1.5, 1.5])  # replicate-wise differences
    half = T2 * math.sqrt(2 / 3 * ((d - d.mean()) ** 2).sum())
    assert c.paired and (c.value, c.low, c.high) == pytest.approx((1.4, 1.4 - half, 1.4 + half), abs=1e-12)
    # other seeds, or other groups: the replicates left out different samples, so no pairing
    shifted = Side(b.row, SampleRecord({"seed": seeds + 100}, other))
    assert not paired.difference(a, shifted, "fid").paired


def test_without_records_the_comparison_is_marginal_and_says_so():
    c = paired.difference(side(30, 29, 31), side(27, 26, 28), "converged_image_mse")
    assert not c.paired and "marginal" in c.how and c.samples == 64
    assert (c.low, c.high) == pytest.approx((3 - math.sqrt(2), 3 + math.sqrt(2)))
    assert paired.difference(side(30), side(27, 26, 28), "converged_image_mse").known is False
    assert paired.difference(side(None), side(27, 26, 28), "converged_image_mse") is None


# --- coverage and power of the paired interval ---------------------------------------------------


def test_paired_interval_covers_a_known_difference_and_is_narrower_than_marginal():
    """Two methods' per-sample errors on 64 shared seeds, correlated 0.85 (log-normal, as squared
    errors are): the paired 95% interval of the difference of mean errors covers the true
    difference at the stated rate; the marginal one (each row's own jackknife interval, combined
    as if independent) is more than twice as wide."""
    rng = np.random.default_rng(0)
    n, rho = 64, 0.85
    true_a, true_b = math.exp(0.5), math.exp(0.2 + 0.5)  # E exp(N(mu, 1)) = exp(mu + 1/2)
    covered, ratios = 0, []
    for _ in range(TRIALS):
        z = rng.standard_normal(n)
        za = z
        zb = rho * z + math.sqrt(1 - rho**2) * rng.standard_normal(n)
        a, b = np.exp(za), np.exp(0.2 + zb)
        records = [record(np.arange(n), converged_image_mse=x) for x in (a, b)]
        ids = iv.group_ids(n, 20, 0)  # each row's own delete-a-group jackknife of its mean
        bounds = [iv.jackknife_bounds(np.mean(x), iv.jackknife_replicates(np.mean, x, ids=ids)) for x in (a, b)]
        sides = [side(float(x.mean()), *bd, samples=r) for x, bd, r in zip((a, b), bounds, records, strict=True)]
        c = paired.difference(*sides, "converged_image_mse")
        covered += c.low <= true_a - true_b <= c.high
        marginal = paired.difference(*(Side(s.row) for s in sides), "converged_image_mse")
        ratios.append((marginal.high - marginal.low) / (c.high - c.low))
    assert COVERAGE[0] <= covered / TRIALS <= COVERAGE[1]
    assert np.median(ratios) > 2


# --- decisions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("low, high, verdict", [
    (-0.3, 0.4, "holds"),  # wholly inside the margin: equivalent
    (0.2, 1.3, "holds"),  # wholly better: keeps it or better (non-inferiority)
    (-0.8, 0.1, "undetermined"),  # across -margin
    (-3.5, -2.0, "does not hold"),  # wholly beyond the margin, on the worse side
    (-0.5, 0.2, "undetermined"),  # touching -margin is not inside it
])
def test_non_inferiority_against_the_margin(low, high, verdict):
    c = Contrast((low + high) / 2, low, high, paired=True, samples=64)
    assert paired.non_inferior(c, 0.5, higher_is_better=True) == verdict
    # a lower-is-better axis: the same contrast with its sign turned decides the same
    flipped = Contrast(-c.value, -high, -low, paired=True, samples=64)
    assert paired.non_inferior(flipped, 0.5, higher_is_better=False) == verdict


def test_better_is_one_sided_on_the_paired_difference():
    assert paired.better(Contrast(1, 0.2, 1.8, True), True) == "better"
    assert paired.better(Contrast(1, 0.2, 1.8, True), False) == "worse"
    assert paired.better(Contrast(0.5, -0.2, 1.2, True), True) == "tie"
    assert paired.better(Contrast(0.5, None, None, False), True) == "unknown"
    assert paired.non_inferior(None, 0.5, True) == "undetermined"


def test_samples_to_decide_is_the_count_for_80_percent_power():
    """n * ((z_0.975 + z_0.8) * se / distance)^2, se from the interval's end facing the boundary."""
    z975, z80, t19 = 1.959963984540054, 0.8416212335729143, 2.093024054408309
    c = Contrast(0.5, -0.2, 1.2, True, samples=64)  # a normal interval: se = 0.7 / z975
    assert paired.samples_to_decide(c, 0.0, True, 64) == math.ceil(64 * ((z975 + z80) * 0.7 / z975 / 0.5) ** 2) == 257
    skewed = Contrast(0.5, -0.3, 0.8, True, samples=64, df=19)  # the end facing 0 is 0.8 away; a t(19) interval
    assert paired.samples_to_decide(skewed, 0.0, True, 64) == math.ceil(64 * ((z975 + z80) * 0.8 / t19 / 0.5) ** 2)
    # against -margin on a lower-is-better axis: oriented, the distance is to -margin
    worse = Contrast(0.4, 0.1, 0.7, True, samples=64)  # MSE up by 0.4: oriented -0.4 [-0.7, -0.1], boundary -0.5
    assert paired.samples_to_decide(worse, -0.5, False, 64) == math.ceil(64 * ((z975 + z80) * 0.3 / z975 / 0.1) ** 2)
    assert paired.samples_to_decide(Contrast(0.0, -1, 1, True, 64), 0.0, True, 64) is None  # on the boundary
