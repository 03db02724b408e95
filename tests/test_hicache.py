"""HiCache: the Hermite polynomials and the scaled forecast by hand and against numpy's Hermite
series, replayed on a recorded trajectory, in the engine on both toy families, and a run's row."""

import math

import numpy as np
import pytest
import torch
from conftest import ROW_ONLY, compose_config
from numpy.polynomial import hermite as H
from test_caching import perturbed

from l2c_bench import generate
from l2c_bench.caching import CacheConfigError, make_cache
from l2c_bench.caching.methods.hicache import HermiteForecast, hermite
from l2c_bench.run import run_point


def test_hermite_polynomials_by_hand_and_as_numpy_has_them():
    assert [hermite(0.5, k) for k in range(4)] == [1.0, 1.0, -1.0, -5.0]  # 1, 2x, 4x^2 - 2, 8x^3 - 12x
    for x in (-1.3, 0.0, 0.25, 2.0):
        for k in range(6):
            assert hermite(x, k) == pytest.approx(H.hermval(x, [0] * k + [1]))  # numpy's physicists' series


def replay(rule, values, interval, nfe):
    """A recorded branch trajectory (values[n], any shape) through the rule on a fixed interval:
    what each evaluation hands on (computed, or forecast)."""
    state, out = None, []
    for n in range(nfe):
        if n % interval == 0:
            state = rule.update(state, values[n], n)
            out.append(values[n])
        else:
            out.append(rule.predict(state, n))
    return out


def test_hicache_forecast_replayed_on_a_recorded_trajectory():
    # f(n) = 3 - 0.5 n (+ 0.1 n^2 for the second case), computed at 0, 3, 6; forecast at 7, 8
    linear = [torch.full((2, 2), 3 - 0.5 * n) for n in range(9)]
    got = replay(HermiteForecast(1, 0.5), linear, 3, 9)
    # order 1, s = 0.5: F + s H_1(s x) F' = F + 2 s^2 x F' = F + x F' / 2, F' = -0.5 from (0, 3) to (3, 1.5)
    assert got[7][0, 0].item() == pytest.approx(0.0 + 0.5 * 1 * -0.5) and got[8][0, 0].item() == pytest.approx(-0.5)
    # s = 1/sqrt(2) makes order 1 TaylorSeer's line: exact on a linear trajectory once two evaluations
    # computed (before, only F is known: evaluations 1 and 2 hand on F(0))
    exact = replay(HermiteForecast(1, math.sqrt(0.5)), linear, 3, 9)
    assert all(torch.allclose(a, b) for a, b in zip(exact[3:], linear[3:], strict=True))
    assert torch.equal(exact[1], linear[0]) and torch.equal(exact[2], linear[0])
    # order 2 on a quadratic, against the authors' formula written with numpy's Hermite series
    quad = [torch.full((1,), 3 - 0.5 * n + 0.1 * n * n, dtype=torch.float64) for n in range(9)]
    got = replay(HermiteForecast(2, 0.5), quad, 3, 9)
    f = [q.item() for q in quad]
    d1 = (f[6] - f[3]) / 3
    d2 = (d1 - (f[3] - f[0]) / 3) / 3
    for n in (7, 8):
        x, s = n - 6, 0.5
        expected = f[6] + sum(s**k * H.hermval(s * x, [0] * k + [1]) / math.factorial(k) * d
                              for k, d in ((1, d1), (2, d2)))
        assert got[n].item() == pytest.approx(expected)


@pytest.mark.parametrize("name,sampler,scale", [("DiT-toy", "ddim", 1.5), ("U-ViT-toy", "dpm_solver2", 0.4)])
def test_hicache_in_the_engine(name, sampler, scale):
    model = perturbed(name)
    # 8 evaluations: interval 3 computes 0, 3, 6; order 1 forecasts from its first derivative at 4, 5, 7
    kw = dict(labels=[1, 2], seeds=[0, 1], steps=8, sampler=sampler, guidance_scale=scale)
    assert torch.equal(generate(model, cache=make_cache("hicache", interval=1), **kw).latents, generate(model, **kw).latents)
    # order 0 is FORA; order 1 at s = 1/sqrt(2) is TaylorSeer's order 1
    assert torch.equal(generate(model, cache=make_cache("hicache", order=0), **kw).latents,
                       generate(model, cache=make_cache("fora", interval=3), **kw).latents)
    ours = generate(model, cache=make_cache("hicache", order=1, scale=math.sqrt(0.5)), **kw)
    taylor = generate(model, cache=make_cache("taylorseer", order=1), **kw)
    assert torch.allclose(ours.latents, taylor.latents, atol=1e-5) and torch.equal(ours.schedule, taylor.schedule)
    default = generate(model, cache=make_cache("hicache"), **kw)
    assert not torch.allclose(default.latents, taylor.latents, atol=1e-5)  # the Hermite forecast differs
    with pytest.raises(CacheConfigError, match="cache.scale"):
        make_cache("hicache", scale=0)


@pytest.mark.slow
def test_hicache_run_writes_an_ok_row(tmp_path):
    row = run_point(compose_config(tmp_path, *ROW_ONLY, "steps=8", "cache=hicache"))
    assert row["status"] == "ok", row.get("error")
    assert row["metrics.macs_speedup"] > 1 and row["metrics.cached_ratio"] == pytest.approx(1.0)
    assert np.isfinite(row["metrics.macs_g"])
