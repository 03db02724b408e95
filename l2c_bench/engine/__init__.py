"""The caching engine: a plan says which attention and MLP branches each model evaluation
computes; one runner executes any plan on any model that routes its branches through it.

It knows no method: each method (`l2c_bench.caching.methods`) turns its settings into a `Plan`
(refined by at most one rule of `engine.rules`, which carries what the method supplies: a
forecast, a token choice, a run-time policy, another library's hooks), and
`l2c_bench.pipeline.generate` runs the plan. It sits below both, so neither imports the other
through it.
"""

from .core import (
    CacheConfigError,
    CacheMethod,
    CacheRun,
    FixedPlan,
    Plan,
    UnsupportedCombination,
    check_interval,
    full_plan,
    realised_ratios,
    restarted,
)
from .rules import Drop, Forecast, Hooked, Refresh, RunTimeSpan, Span, TokenWise

__all__ = ["CacheConfigError", "CacheMethod", "CacheRun", "Drop", "FixedPlan", "Forecast", "Hooked", "Plan",
           "Refresh", "RunTimeSpan", "Span", "TokenWise", "UnsupportedCombination", "check_interval", "full_plan",
           "realised_ratios", "restarted"]
