"""`none`: every branch at every evaluation (step reduction = this with fewer `steps`)."""

from __future__ import annotations

from dataclasses import dataclass

from ...engine.core import CacheMethod, Plan, full_plan


@dataclass
class NoCache(CacheMethod):
    name = "none"
    label = "uncached"  # in tables and plots (analysis/labels.py)
    summary = "every branch at every evaluation: the uncached reference (with fewer `steps`: step reduction)"
    description = "every branch every evaluation; step reduction = this with fewer `steps`"

    def plan(self, *, model, sampler: str, nfe: int) -> Plan:
        return full_plan(nfe, model.num_blocks)
