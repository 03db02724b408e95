"""`fora`: FORA (Selvaraju et al., 2024) -- every branch is recomputed at every `interval`-th
evaluation and reused from it at all others."""

from __future__ import annotations

from dataclasses import dataclass

from ...engine.core import CacheMethod, Plan, check_interval


@dataclass
class Fora(CacheMethod):
    interval: int = 2
    name = "fora"
    label = "FORA"  # in tables and plots (analysis/labels.py)
    summary = "FORA: recompute everything every `interval` evaluations, reuse in between"
    description = "everything recomputed every `interval` evaluations, reused in between"

    def __post_init__(self):
        check_interval(self.interval)

    def plan(self, *, model, sampler: str, nfe: int) -> Plan:
        blocks = model.num_blocks
        compute = tuple(((n % self.interval == 0,) * 2,) * blocks for n in range(nfe))
        return Plan(compute, tuple(n for n in range(nfe) if n % self.interval))
