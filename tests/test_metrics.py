"""Metric functions on inputs with known answers; the timing helper on a fake clock."""

import numpy as np
import pytest

from l2c_bench.metrics import (
    feature_statistics,
    fid_from_statistics,
    measure,
    on_class_rate,
    per_class_rate,
)
from l2c_bench.metrics.quality import mse, psnr


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_timing_statistics_and_interleaving_on_a_fake_clock():
    clock, order = FakeClock(), []
    durations = {"a": iter([9.0, 1.0, 2.0, 3.0, 4.0, 100.0]), "b": iter([7.0, 10.0, 20.0, 30.0, 40.0])}

    def make(name):
        def fn():
            order.append(name)
            clock.now += next(durations[name])
        return fn

    result = measure({"a": make("a"), "b": make("b")}, repeats=4, warmup=1, clock=clock)
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]  # warm-up, then ABBA
    assert result["a"].median_s == 2.5 and result["a"].q25_s == 1.75 and result["a"].q75_s == 3.25
    assert result["b"].median_s == 25.0 and result["b"].iqr_s == 15.0 and result["a"].warmup == 1


def test_warmup_is_sized_by_time():
    clock, calls = FakeClock(), []

    def fn():
        calls.append(1)
        clock.now += 0.3

    measure({"x": fn}, repeats=1, warmup=1, min_warmup_s=1.0, clock=clock)
    assert len(calls) == 4 + 1  # 4 warm-up calls reach 1.2 s >= 1.0 s, then 1 timed


def test_fid_is_zero_on_itself_and_matches_the_closed_form_for_gaussians():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(500, 4))
    mu, sigma = feature_statistics(feats)
    assert fid_from_statistics(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-6)
    # N(0, I) vs N(m, 4I) in d dims: |m|^2 + d*(1 + 4 - 2*2) = |m|^2 + d
    d, m = 4, np.array([1.0, 2.0, 0.0, 0.0])
    assert fid_from_statistics(np.zeros(d), np.eye(d), m, 4 * np.eye(d)) == pytest.approx(5.0 + d)


def test_class_rates_and_paired_fidelity():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 5.0]])
    labels = np.array([0, 1, 1, 1])
    assert on_class_rate(logits, labels) == 0.75
    assert per_class_rate(logits, labels, 3) == [1.0, 2 / 3, None]
    a, b = np.zeros((2, 3)), np.full((2, 3), 0.5)
    assert mse(a, b) == 0.25 and psnr(a, b, peak_to_peak=2.0) == pytest.approx(10 * np.log10(16))
    assert psnr(a, a, 2.0) == float("inf")
