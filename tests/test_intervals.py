"""95% intervals (l2c_bench/metrics/intervals.py): coverage on synthetic data with known values,
fast paths equal to the reference jackknife, seeding, shrinkage with more samples, the timing
intervals from hand-made repeats, and a toy run that records them."""

import inspect
import math

import numpy as np
import pytest
import torch
from conftest import compose_config
from scipy.stats import binom

from l2c_bench.metrics import (
    Timing,
    feature_statistics,
    fid_from_statistics,
    kid,
    measure,
    precision_recall,
)
from l2c_bench.metrics import intervals as iv
from l2c_bench.metrics.quality import inception_score
from l2c_bench.models.loading import RunConfigError

TRIALS = 200
# a 95% interval covers a binomial(200, 0.95) number of times: 190 +- 3.1 (sd); 3 sd either side
COVERAGE = (0.95 - 3 * math.sqrt(0.95 * 0.05 / TRIALS), min(1.0, 0.95 + 3 * math.sqrt(0.95 * 0.05 / TRIALS)))


def width(bounds):
    return bounds[1] - bounds[0]


def test_groups_are_balanced_seeded_and_depend_only_on_count_groups_and_seed():
    ids = iv.group_ids(103, 20, seed=7)
    assert set(np.bincount(ids)) == {5, 6} and np.bincount(ids).sum() == 103  # sizes differ by at most one
    assert np.array_equal(ids, iv.group_ids(103, 20, seed=7))  # same seed: same groups
    assert not np.array_equal(ids, iv.group_ids(103, 20, seed=8))
    assert np.array_equal(np.bincount(iv.group_ids(4, 20, seed=0)), [1, 1, 1, 1])  # never more groups than samples
    with pytest.raises(ValueError, match="groups=1"):
        iv.group_ids(10, 1, seed=0)


def test_fast_paths_equal_the_reference_jackknife():
    rng = np.random.default_rng(0)
    x = rng.normal(0.2, 1.1, size=(60, 6))  # generated features
    y = rng.normal(size=(150, 6))  # reference features
    twin = x + rng.normal(0, 0.3, size=x.shape)  # paired set (row i from the same seed as x[i])
    ids = iv.group_ids(60, 7, seed=3)  # unequal groups (60 = 6 x 8 + 12)
    mu, sigma = feature_statistics(y)

    def reference_fid(a):
        return fid_from_statistics(*feature_statistics(a), mu, sigma)

    fast = iv.fid_replicates(x, ids, mu_reference=mu, sigma_reference=sigma)
    np.testing.assert_allclose(fast, iv.jackknife_replicates(reference_fid, x, ids=ids), rtol=1e-9)
    paired = iv.fid_replicates(x, ids, reference_features=twin)
    by_hand = iv.jackknife_replicates(lambda a, b: fid_from_statistics(*feature_statistics(a), *feature_statistics(b)),
                                      x, twin, ids=ids)
    np.testing.assert_allclose(paired, by_hand, rtol=1e-9)
    # KID: the batched torch path draws clean-fid's subsets from kid()'s seed, as kid() does
    batched = iv.kid_replicates(x, y, ids, num_subsets=5, max_subset_size=30, chunk=2)
    by_kid = iv.jackknife_replicates(lambda a: kid(a, y, num_subsets=5, max_subset_size=30), x, ids=ids)
    np.testing.assert_allclose(batched, by_kid, rtol=1e-9)
    assert np.array_equal(iv.kid_replicates(x, y, ids, num_subsets=5, max_subset_size=30, batched=False), by_kid)
    defaults = {name: inspect.signature(kid).parameters[name].default for name in ("num_subsets", "max_subset_size",
                                                                                 "seed")}
    assert defaults == {name: inspect.signature(iv.kid_replicates).parameters[name].default for name in defaults}
    recall = iv.recall_replicates(x, y, ids, k=3)
    assert np.array_equal(recall, iv.jackknife_replicates(lambda a: precision_recall(a, y, k=3)[1], x, ids=ids))
    assert len(set(fast)) == 7 and len(set(recall)) > 1  # every replicate left a different group out


def test_paired_mse_interval_covers_a_known_mean_at_the_stated_rate():
    """Per-sample squared errors are skewed: exponential with mean 2 (the MSE to cover), 100
    samples, the row's construction (jackknife on the PSNR's log scale, mapped back)."""
    rng = np.random.default_rng(1)
    hits = 0
    for trial in range(TRIALS):
        (low, high), _ = iv.mse_psnr_bounds(rng.exponential(2.0, size=100), 1, 2.0, iv.group_ids(100, 20, trial))
        hits += low <= 2.0 <= high
    assert COVERAGE[0] <= hits / TRIALS <= COVERAGE[1], hits


def test_fid_interval_covers_the_fid_between_two_gaussians():
    """Generated N(mu, diag(s^2)) against reference statistics fixed at the reference Gaussian's
    exact N(0, I): FID = |mu|^2 + sum (s - 1)^2 = 1.0 + 0.08 = 1.08. At N = 400 in 4 dimensions the
    O(1/N) bias of FID at N samples (about 0.02) is a sixth of its spread, so the interval (for
    the expected FID at N) must cover the population value about as often as stated."""
    rng = np.random.default_rng(2)
    mu, scale, truth = np.full(4, 0.5), np.array([1.2, 1.2, 1.0, 1.0]), 1.0 + 2 * 0.2**2

    def fid_to_standard_normal(x):  # FID against N(0, I): |mean|^2 + sum (sqrt(eig(cov)) - 1)^2
        mean, cov = feature_statistics(x)
        return float(mean @ mean + ((np.sqrt(np.linalg.eigvalsh(cov)) - 1) ** 2).sum())

    hits = 0
    for trial in range(TRIALS):
        x = mu + scale * rng.normal(size=(400, 4))
        ids = iv.group_ids(len(x), 20, seed=trial)
        low, high = iv.jackknife_bounds(fid_to_standard_normal(x), iv.fid_replicates(
            x, ids, mu_reference=np.zeros(4), sigma_reference=np.eye(4)))
        hits += low <= truth <= high
    assert COVERAGE[0] <= hits / TRIALS <= COVERAGE[1], hits


def test_wilson_interval_solves_the_score_equation_and_stays_honest_at_zero():
    z = 1.959963984540054
    for successes, n in ((0, 100), (3, 100), (50, 100), (100, 100), (81, 263)):
        low, high = iv.wilson_interval(successes, n)
        assert low <= successes / n <= high
        for end in (low, high):  # the Wilson ends are where (p_hat - p)^2 = z^2 p (1 - p) / n
            if end not in (0.0, 1.0):
                assert (successes / n - end) ** 2 == pytest.approx(z * z * end * (1 - end) / n, rel=1e-9)
    assert iv.wilson_interval(0, 100) == (0.0, pytest.approx(0.0370, abs=1e-4))  # never [0, 0] for 0 flips
    assert width(iv.wilson_interval(5, 400)) < width(iv.wilson_interval(5, 100)) / 1.5  # more samples: narrower


def test_inception_score_interval_is_the_t_interval_of_its_splits():
    logits = np.random.default_rng(3).normal(size=(200, 10)) * 3
    score, std = inception_score(logits)
    splits = [inception_score(part, splits=1)[0] for part in np.array_split(logits, 10)]  # each split's own score
    low, high = iv.split_mean_bounds(score, std, 10)
    half = 2.2621571627409915 * np.std(splits, ddof=1) / math.sqrt(10)  # t(0.975, 9)
    assert (low, high) == (pytest.approx(score - half, rel=1e-9), pytest.approx(score + half, rel=1e-9))


def test_same_seed_same_intervals_and_more_samples_narrower():
    rng = np.random.default_rng(4)
    reference = rng.normal(size=(150, 8))

    class Reference:
        mu, sigma = feature_statistics(reference)
        features = reference

    def fields(x, seed, metrics=("fid", "recall")):
        every = {"fid": lambda: fid_from_statistics(*feature_statistics(x), Reference.mu, Reference.sigma),
                 "kid": lambda: kid(x, reference), "recall": lambda: precision_recall(x, reference)[1]}
        values = {name: every[name]() for name in metrics}
        return iv.quality_fields(values, features=x, ids=iv.group_ids(len(x), 20, seed), reference=Reference)

    x = rng.normal(0.3, 1.2, size=(60, 8))
    first, again, other = fields(x, 0), fields(x, 0), fields(x, 1)
    assert first == again  # same seed, same data: identical intervals
    assert all(first[f"{m}_ci_low"] != other[f"{m}_ci_low"] for m in ("fid", "recall"))  # the seed: the groups
    # 16x the samples: FID's interval about 4x narrower (recall's jackknife is not: docs/metrics.md)
    large = fields(rng.normal(0.3, 1.2, size=(960, 8)), 0, metrics=("fid",))
    assert 2.5 < (first["fid_ci_high"] - first["fid_ci_low"]) / (large["fid_ci_high"] - large["fid_ci_low"]) < 6.5
    squared_errors = rng.exponential(1.0, size=1600)
    small_mse, _ = iv.mse_psnr_bounds(squared_errors[:100], 1, 2.0, iv.group_ids(100, 20, 0))
    large_mse, _ = iv.mse_psnr_bounds(squared_errors, 1, 2.0, iv.group_ids(1600, 20, 0))
    assert 2.5 < width(small_mse) / width(large_mse) < 6.5


def test_mse_and_psnr_intervals_share_their_replicates():
    rng = np.random.default_rng(5)
    squared_errors = rng.exponential(3.0, size=80) * 10  # per-sample sums over 10 elements
    ids = iv.group_ids(80, 20, seed=0)
    mse, psnr = iv.mse_psnr_bounds(squared_errors, 10, 2.0, ids)
    estimate = squared_errors.sum() / 800
    assert mse[0] < estimate < mse[1] and psnr[0] < 10 * math.log10(4 / estimate) < psnr[1]
    # one interval in two units: the MSE ends are the PSNR ends through the same peak
    assert mse == (pytest.approx(4 / 10 ** (psnr[1] / 10)), pytest.approx(4 / 10 ** (psnr[0] / 10)))
    assert iv.mse_psnr_bounds(np.zeros(80), 10, 2.0, ids) == ((0.0, 0.0), None)  # identical outputs


def test_median_interval_is_the_exact_order_statistic_interval():
    assert iv.median_interval([5, 1, 4, 2, 3]) is None  # 5 repeats: even [min, max] covers only 93.75%
    assert iv.median_interval([6, 5, 1, 4, 2, 3]) == (1, 6)  # 6: [min, max] covers 1 - 2 / 64 = 96.9%
    samples = list(range(20))
    low, high = iv.median_interval(samples)
    assert (low, high) == (5, 14)  # x_(6), x_(15): k = 6 is the largest with P(B(20, 1/2) < k) <= 2.5%
    assert binom.cdf(5, 20, 0.5) <= 0.025 < binom.cdf(6, 20, 0.5)


def test_speedup_interval_from_hand_made_timings():
    drift = np.array([1.0, 1.3, 0.8, 1.1, 0.9, 1.2, 1.0, 0.85])  # shared by the two calls of a repeat pair
    method = 0.010 * drift
    uncached = 0.025 * drift * np.array([1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 1.0, 1.0])
    fields = iv.timing_fields(list(method), list(uncached), resamples=500, seed=0)
    speedup = np.median(uncached) / np.median(method)
    low, high = fields["speedup_ci_low"], fields["speedup_ci_high"]
    assert 2.4 < low <= speedup <= high < 2.6  # pairs cancel the drift: the ratio is known to about 2%
    assert fields["latency_ms_ci_low"] == pytest.approx(8.0) and fields["latency_ms_ci_high"] == pytest.approx(13.0)
    # the same timings unpaired (uncached in another order): the drift no longer cancels
    shuffled = iv.timing_fields(list(method), list(uncached[[3, 7, 0, 5, 1, 6, 2, 4]]), resamples=500, seed=0)
    assert shuffled["speedup_ci_high"] - shuffled["speedup_ci_low"] > 3 * (high - low)
    assert iv.timing_fields(list(method), list(uncached), resamples=500, seed=0) == fields  # seeded
    # exactly twice as slow in every pair: no doubt at all
    exact = iv.timing_fields(list(method), list(2 * method), resamples=500, seed=0)
    assert exact["speedup_ci_low"] == exact["speedup_ci_high"] == pytest.approx(2.0)
    few = iv.timing_fields(list(method[:3]), list(uncached[:3]), resamples=500, seed=0)
    assert few["speedup_ci_low"] is few["latency_ms_ci_low"] is None and "timing_repeats" in few["timing_ci_note"]


def test_measure_keeps_every_repeat_in_abba_order():
    clock = iter(range(100)).__next__  # each call of the clock: one second later
    calls = []
    timings = measure({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=4, warmup=0,
                      clock=lambda: float(clock()))
    assert calls == list("abbaabba")
    assert timings["a"].samples_s == timings["b"].samples_s == (1.0, 1.0, 1.0, 1.0)
    assert Timing(1.0, 1.0, 1.0, 1, 0).samples_s == ()  # built by hand: no samples


def test_timing_stops_once_its_interval_is_narrow_and_says_why():
    # a synthetic clock: "b" takes 2 s, "a" 1 s, and each call +-jitter (deterministic order)
    def timer_with(jitter):
        wobble = iter(np.tile([1 + jitter, 1 - jitter, 1.0], 100))
        return lambda fn: fn() * next(wobble)

    fns = {"method": lambda: 1.0, "uncached": lambda: 2.0}
    quiet = measure(fns, repeats=10, warmup=0, timer=timer_with(0.001), min_repeats=6,
                    sure=iv.timing_is_sure(0.05, resamples=200, seed=0))
    assert (quiet["method"].repeats, quiet["method"].stop) == (6, "sure")
    noisy = measure(fns, repeats=10, warmup=0, timer=timer_with(0.3), min_repeats=6,
                    sure=iv.timing_is_sure(0.05, resamples=200, seed=0))
    assert (noisy["method"].repeats, noisy["method"].stop) == (10, "max")
    assert iv.timing_halfwidth({"method": noisy["method"].samples_s, "uncached": noisy["uncached"].samples_s},
                               resamples=200, seed=0) > 0.05
    # no rule (halfwidth 0, or intervals off): the fixed count
    assert iv.timing_is_sure(0.0, resamples=200, seed=0) is None and iv.timing_is_sure(0.05, resamples=0, seed=0) is None
    fixed = measure(fns, repeats=7, warmup=0, timer=timer_with(0.001))
    assert (fixed["method"].repeats, fixed["method"].stop) == (7, "fixed")
    # asked only after whole ABBA pairs: a rule that always holds, from 7 on, stops at 8
    asked = []
    always = measure(fns, repeats=12, warmup=0, timer=timer_with(0.0), min_repeats=7,
                     sure=lambda samples: asked.append(len(samples["method"])) or True)
    assert asked == [8] and always["method"].repeats == always["uncached"].repeats == 8
    # no twin (an uncached row): the latency median's interval decides
    alone = measure({"method": lambda: 1.0}, repeats=10, warmup=0, timer=timer_with(0.001), min_repeats=6,
                    sure=iv.timing_is_sure(0.05, resamples=200, seed=0))
    assert (alone["method"].repeats, alone["method"].stop) == (6, "sure")


def test_the_stopped_speedup_interval_covers_the_true_speedup_at_its_rate():
    from l2c_bench.benchmarks.timing_coverage import coverage

    # a synthetic source with a known speedup (1.5), per-call noise and shared drift; fixed seed.
    # 400 replicates: a binomial 95% band around 0.95 is about [0.93, 0.97]
    quiet = coverage(0.02, replicates=400, halfwidth=0.05, seed=0)
    assert quiet.stopped_early > 0.8 and quiet.mean_repeats < 8.5  # the rule saves repeats here
    noisy = coverage(0.08, replicates=400, halfwidth=0.05, seed=1)
    assert noisy.mean_repeats > 9.5  # ... and not here
    for c in (quiet, noisy):
        assert 0.925 <= c.rate <= 0.975, c


def test_a_one_sample_run_gets_timing_intervals_and_says_why_quality_has_none():
    from l2c_bench.metrics.registry import row_fields

    part = {"index": torch.arange(1), "features": torch.zeros(1, 4), "labels": torch.zeros(1)}
    timings = [1.0, 1.1, 0.9, 1.05, 0.95, 1.0]
    out = row_fields({"fid": None}, part, method_s=timings, uncached_s=[2 * t for t in timings], groups=20,
                        resamples=50, seed=0)
    assert out["speedup_ci_low"] <= 2.0 <= out["speedup_ci_high"] and out["interval_groups"] == 0
    assert out["quality_ci_note"] == "1 sample: a quality interval needs >= 2 (metrics.num_samples)"
    assert not any(k.startswith("fid_ci") for k in out)


def test_bad_interval_settings_name_the_key(tmp_path):
    from l2c_bench.runs.prepare import validate

    with pytest.raises(RunConfigError, match="metrics.interval_resamples"):
        validate(compose_config(tmp_path, "cache=none", "metrics.interval_resamples=-1"))
    with pytest.raises(RunConfigError, match="metrics.interval_groups"):
        validate(compose_config(tmp_path, "cache=none", "metrics.interval_groups=1"))


TOY = ["tracker=none", "cache=fora", "steps=2", "metrics.num_samples=20", "metrics.batch_size=10",
       "metrics.timing_batch=1", "metrics.timing_repeats=6", "metrics.timing_warmup=0", "metrics.reference_samples=40",
       "metrics.grid_samples=2", "metrics.converged_nfe=4"]
INTERVAL_KEYS = ("latency_ms", "latency_ms_uncached", "speedup", "fid", "kid", "precision", "recall", "is",
                 "on_class_rate", "class_flip_rate", "paired_latent_mse", "paired_latent_psnr_db", "paired_image_mse",
                 "paired_image_psnr_db", "converged_latent_mse", "converged_latent_psnr_db", "converged_image_mse",
                 "converged_image_psnr_db", "fid_vs_converged", "kid_vs_converged")


@pytest.mark.slow
def test_toy_run_records_an_interval_around_every_number_and_shards_agree(tmp_path):
    from l2c_bench.run import run_point

    # the timing stops at 6 once its interval is within +-90% (so: at once)
    row = run_point(compose_config(tmp_path / "whole", *TOY, "metrics.timing_repeats=10", "metrics.timing_min_repeats=6",
                                   "metrics.timing_halfwidth=0.9"))
    assert row["status"] == "ok", row.get("error")
    m = {k.removeprefix("metrics."): v for k, v in row.items() if k.startswith("metrics.")}
    assert (m["timing_repeats"], m["timing_stop"]) == (6, "sure")
    for key in INTERVAL_KEYS:
        assert m[f"{key}_ci_low"] <= m[key] <= m[f"{key}_ci_high"], key
        assert m[f"{key}_ci_low"] < m[f"{key}_ci_high"], key  # none of these is exact here
    assert (m["interval_resamples"], m["interval_groups"], m["interval_seed"]) == (1000, 20, 0)
    assert m["interval_method"].startswith("quality: jackknife-20;") and 0 < m["intervals_s"] < 30
    # shards joined before scoring: every sample-based interval is the unsharded one
    for index in (0, 1):
        sharded = run_point(compose_config(tmp_path / "sharded", *TOY, "shard.count=2", f"shard.index={index}"))
    assert sharded["status"] == "ok", sharded.get("error")
    for key in INTERVAL_KEYS[3:]:
        for end in ("_ci_low", "_ci_high"):
            assert sharded[f"metrics.{key}{end}"] == pytest.approx(m[key + end], rel=1e-9, abs=1e-12), key
    # intervals off: none recorded
    off = run_point(compose_config(tmp_path / "off", *TOY, "metrics.interval_resamples=0", "metrics.converged_nfe=0",
                                   "metrics.timing_repeats=10", "metrics.timing_min_repeats=6"))
    assert off["status"] == "ok"
    assert (off["metrics.timing_repeats"], off["metrics.timing_stop"]) == (10, "fixed")  # no interval: no stop rule
    assert not [k for k in off if k.startswith("metrics.") and (k.endswith("_ci_low") or "interval" in k)]


def test_fid_fast_path_runs_on_the_device_it_is_given():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the fast paths' float64 GPU path is checked where one exists")
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(300, 16)), rng.normal(size=(500, 16))
    ids = iv.group_ids(300, 20, seed=0)
    mu, sigma = feature_statistics(y)
    np.testing.assert_allclose(iv.fid_replicates(x, ids, mu_reference=mu, sigma_reference=sigma, device="cuda"),
                               iv.fid_replicates(x, ids, mu_reference=mu, sigma_reference=sigma), rtol=1e-9)
    np.testing.assert_allclose(iv.kid_replicates(x, y, ids, num_subsets=5, device="cuda"),
                               iv.kid_replicates(x, y, ids, num_subsets=5), rtol=1e-9)  # torch vs numpy
    assert np.array_equal(iv.recall_replicates(x, y, ids, device="cuda"), iv.recall_replicates(x, y, ids))
