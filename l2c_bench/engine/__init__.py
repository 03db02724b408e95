"""The caching engine: a plan says which attention and MLP branches each model evaluation
computes; one runner executes any plan on any model that routes its branches through it.

It knows no method: each method (`l2c_bench.caching.methods`) turns its settings into a `Plan`
(and, for run-time decisions, a policy the plan carries), and `l2c_bench.pipeline.generate` runs
the plan. It sits below both, so neither imports the other through it.
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
)

__all__ = ["CacheConfigError", "CacheMethod", "CacheRun", "FixedPlan", "Plan", "UnsupportedCombination",
           "check_interval", "full_plan", "realised_ratios"]
