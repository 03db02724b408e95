"""`taylorseer`: TaylorSeer (Liu et al., 2025, "From Reusing to Forecasting: Accelerating
Diffusion Models with TaylorSeers"), on branch outputs.

Every `interval`-th evaluation computes every branch and updates, per branch, finite-difference
estimates of its derivatives along the sampling trajectory up to `order`; the evaluations in
between *forecast* each branch output by the Taylor polynomial from the last computation
instead of reusing it (order 0 is FORA). Distances are counted in evaluations (the paper counts
sampler steps; for DiT + DDIM they coincide, for DPM-Solver-2 a step's midpoint counts as one).
Static schedule: MACs and cached ratio are exact (the forecast's elementwise work is not in the
MACs count, as for every method); no host synchronisation. The store holds order+1 tensors per
branch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...engine import CacheConfigError, CacheMethod, Forecast, Plan, check_interval


def taylor_update(previous, out: torch.Tensor, n: int, order: int):
    """(evaluation, [f, f', f'', ...]) after computing `out` at evaluation n: each derivative is
    the difference of the one below it between the last two computations, over their distance."""
    derivatives = [out]
    if previous is not None:
        n_prev, old = previous
        for i in range(min(order, len(old))):
            derivatives.append((derivatives[i] - old[i]) / (n - n_prev))
    return n, derivatives


def taylor_forecast(state, n: int) -> torch.Tensor:
    """sum_i f^(i) (n - n_last)^i / i!: the branch output forecast at evaluation n."""
    n_last, derivatives = state
    out, step, factor = derivatives[0], n - n_last, 1.0
    for i, d in enumerate(derivatives[1:], start=1):
        factor *= step / i
        out = out + factor * d
    return out


@dataclass(frozen=True)
class TaylorForecast:
    """The plan's forecast rule (`Forecast.rule`): a branch's state is (evaluation, [f, f', ...])."""

    order: int

    def update(self, previous, out: torch.Tensor, n: int):
        return taylor_update(previous, out, n, self.order)

    def predict(self, state, n: int) -> torch.Tensor:
        return taylor_forecast(state, n)


@dataclass
class TaylorSeer(CacheMethod):
    interval: int = 3
    order: int = 1
    name = "taylorseer"
    label = "TaylorSeer"  # in tables and plots (analysis/labels.py)
    summary = "TaylorSeer: forecast the skipped evaluations by a Taylor expansion"
    description = ("TaylorSeer (Liu et al., 2025): all branches computed every `interval`-th evaluation, "
                   "*forecast* in between by a finite-difference Taylor expansion (order 0 = FORA)")

    def __post_init__(self):
        check_interval(self.interval)
        if int(self.order) != self.order or self.order < 0:
            raise CacheConfigError(f"cache.order={self.order} must be an integer >= 0")

    def plan(self, *, model, sampler: str, nfe: int) -> Plan:
        blocks = model.num_blocks
        compute = tuple(((n % self.interval == 0,) * 2,) * blocks for n in range(nfe))
        return Plan(compute, tuple(n for n in range(nfe) if n % self.interval), rule=Forecast(TaylorForecast(int(self.order))))
