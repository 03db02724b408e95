"""`hicache`: HiCache (ICLR 2026, arXiv 2508.16984, "A Plug-in Scaled-Hermite Upgrade for Taylor-Style
Cache-then-Forecast Diffusion Acceleration"), on branch outputs: TaylorSeer's schedule and its
finite-difference derivative estimates F^(k) (`taylorseer.taylor_update`), but the forecast at
distance x from the last computed evaluation uses scaled Hermite polynomials instead of powers:

    F(x) = F + sum_{k=1..order} s^k H_k(s x) / k! * F^(k),

H_k the physicists' Hermite polynomials (H_0 = 1, H_1 = 2x, H_{k+1} = 2x H_k - 2k H_{k-1}) and s
the `scale` of the dual scaling (argument and coefficient), which keeps the polynomial's growth
in check. The rule is HiCache's `_hicache_prediction_formula` with `_hicache_polynomial` (read in
yiming-l21/CFGCache, whose README is HiCache's; the authors' fenglang918/HiCache could not be
fetched here): default scale 0.5, max order 3. Distances count evaluations, as our TaylorSeer's.
What differs: their warm-up (`first_enhance`) is not applied, as our `taylorseer` has none; the
forecast starts from evaluation 0's single computation (order 0 until two were computed).
Static schedule: MACs and cached ratio exact, no host synchronisation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...engine import CacheConfigError, CacheMethod, Forecast, Plan, check_interval
from .taylorseer import taylor_update


def hermite(x: float, k: int) -> float:
    """The physicists' Hermite polynomial H_k(x), by its three-term recurrence."""
    previous, current = 1.0, 2.0 * x
    if k == 0:
        return previous
    for n in range(1, k):
        previous, current = current, 2.0 * x * current - 2.0 * n * previous
    return current


def hermite_forecast(state, n: int, scale: float) -> torch.Tensor:
    """F + sum_k s^k H_k(s x) / k! F^(k) at evaluation n, x = n - the last computed evaluation."""
    n_last, derivatives = state
    x, out = n - n_last, derivatives[0]
    for k, d in enumerate(derivatives[1:], start=1):
        out = out + (scale**k * hermite(scale * x, k) / math.factorial(k)) * d
    return out


@dataclass(frozen=True)
class HermiteForecast:
    """The plan's forecast rule (`Forecast.rule`): TaylorSeer's state (evaluation, [F, F', ...])."""

    order: int
    scale: float

    def update(self, previous, out: torch.Tensor, n: int):
        return taylor_update(previous, out, n, self.order)

    def predict(self, state, n: int) -> torch.Tensor:
        return hermite_forecast(state, n, self.scale)


@dataclass
class HiCache(CacheMethod):
    interval: int = 3  # every interval-th evaluation computes (as our taylorseer's default)
    order: int = 3  # HiCache's max_order
    scale: float = 0.5  # HiCache's hicache_scale_factor
    name = "hicache"
    label = "HiCache"  # in tables and plots (analysis/labels.py)
    summary = "HiCache: TaylorSeer's schedule, forecast by scaled Hermite polynomials"
    description = ("HiCache (ICLR 2026): all branches computed every `interval`-th evaluation, "
                   "forecast in between from TaylorSeer's finite-difference derivatives (up to `order`) with "
                   "scaled Hermite polynomials, F + sum_k s^k H_k(s x)/k! F^(k), s = `scale`. Differs from the "
                   "authors' code: no warm-up before forecasting (as our taylorseer)")

    def __post_init__(self):
        check_interval(self.interval)
        if int(self.order) != self.order or self.order < 0:
            raise CacheConfigError(f"cache.order={self.order} must be an integer >= 0")
        if not (math.isfinite(float(self.scale)) and self.scale > 0):
            raise CacheConfigError(f"cache.scale={self.scale} must be > 0")

    def plan(self, *, model, sampler: str, nfe: int) -> Plan:
        compute = tuple(((n % self.interval == 0,) * 2,) * model.num_blocks for n in range(nfe))
        return Plan(compute, tuple(n for n in range(nfe) if n % self.interval),
                    rule=Forecast(HermiteForecast(int(self.order), float(self.scale))))
