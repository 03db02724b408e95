"""`heuristic` and `layer_drop`: the paper's hand-made baselines (Fig. 4; Tables 5/7).

Both use L2C's cache steps. In each, `round(ratio * 2 * blocks)` branches are chosen -- in
branch order 2b + j from the bottom (input side), from the top, or at random (seeded, fresh
per step) -- and reused (`heuristic`) or dropped entirely (`layer_drop`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..engine import CacheConfigError, CacheMethod, Plan
from .pairing import l2c_cache_steps

STRATEGIES = ("bottom", "top", "random")


def chosen_branches(strategy: str, ratio: float, num_branches: int, generator: torch.Generator) -> list[int]:
    k = round(ratio * num_branches)
    if strategy == "bottom":
        return list(range(k))
    if strategy == "top":
        return list(range(num_branches - k, num_branches))
    return torch.randperm(num_branches, generator=generator)[:k].tolist()


@dataclass
class Heuristic(CacheMethod):
    strategy: str = "bottom"
    ratio: float = 0.5
    seed: int = 0
    name = "heuristic"
    drop = False

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise CacheConfigError(f"cache.strategy={self.strategy!r} is unknown; valid: {', '.join(STRATEGIES)}")
        if not 0.0 <= float(self.ratio) <= 1.0:
            raise CacheConfigError(f"cache.ratio={self.ratio} must lie in [0, 1]")

    def plan(self, *, model, sampler: str, nfe: int) -> Plan:
        blocks = model.num_blocks
        generator = torch.Generator().manual_seed(int(self.seed))
        compute = [((True, True),) * blocks for _ in range(nfe)]
        pairs = l2c_cache_steps(model.family, sampler, nfe)
        for n, _ in pairs:
            flat = [True] * (2 * blocks)
            for index in chosen_branches(self.strategy, self.ratio, 2 * blocks, generator):
                flat[index] = False
            compute[n] = tuple((flat[2 * b], flat[2 * b + 1]) for b in range(blocks))
        return Plan(tuple(compute), tuple(n for n, _ in pairs), drop=self.drop)


@dataclass
class LayerDrop(Heuristic):
    strategy: str = "random"
    name = "layer_drop"
    drop = True
