"""`heuristic`: the paper's hand-made caching baseline (Fig. 4); `layer_drop` drops what it picks.

Both use L2C's cache steps (U-ViT with `shifted=False`: each solver step's midpoint instead).
In each, `round(ratio * 2 * blocks)` branches are chosen -- in branch order 2b + j from the bottom (input side), from the top, at random (seeded, fresh per
step), or `greedy`: those whose output changes least from the previous evaluation, measured
as mean ||f(h_n) - f(h_{n-1})||^2 on a few uncached calibration samples (the per-layer error
of the paper's Fig. 3) -- and reused (`heuristic`) or dropped entirely (`layer_drop`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...engine.core import CacheConfigError, CacheMethod, CacheRun, Plan, full_plan
from ...engine.rules import REUSE, Drop
from ...pipeline import generate
from ...sampling import GUIDANCE_OFF
from .l2c.pairing import l2c_cache_steps

STRATEGIES = ("bottom", "top", "random", "greedy")
CALIBRATION_SEEDS = range(1_000_000, 1_000_004)  # 4 samples, disjoint from benchmark seeds


class _ChangeRecorder(CacheRun):
    """Computes everything and records each branch's mean squared change between evaluations."""

    def __init__(self, nfe: int, num_blocks: int):
        super().__init__(full_plan(nfe, num_blocks))
        self.change = torch.zeros(nfe, num_blocks, 2, dtype=torch.float64)
        self.previous: dict = {}

    def begin_evaluation(self, passes: int):
        n = self.evaluations
        recorder = self

        def runner(block, branch, fn, *args):
            out = fn(*args)
            key = (block, branch)
            if key in recorder.previous:
                recorder.change[n, block, branch] += (out - recorder.previous[key]).float().pow(2).mean().item()
            recorder.previous[key] = out
            return out

        super().begin_evaluation(passes)
        return [runner] * passes


class _Recording:
    """A cache argument for `generate` that computes everything and keeps its recorders."""

    def __init__(self):
        self.runs = []

    def checked_plan(self, *, model, sampler, nfe):
        return full_plan(nfe, model.num_blocks)

    def run(self, plan):
        self.runs.append(_ChangeRecorder(plan.nfe, plan.num_blocks))
        return self.runs[-1]


def branch_change(model, sampler: str, nfe: int) -> torch.Tensor:
    """Mean squared change of each branch output vs the previous evaluation: (nfe, blocks, 2)."""
    if next(model.parameters()).device.type == "meta":
        raise CacheConfigError("cache.strategy=greedy calibrates on the real model; it cannot plan on `meta`")
    recording = _Recording()
    labels = [i % model.num_classes for i in range(len(CALIBRATION_SEEDS))]
    guidance = GUIDANCE_OFF[model.family]  # unguided: the conditional branch outputs
    generate(model, labels=labels, seeds=list(CALIBRATION_SEEDS), steps=nfe, sampler=sampler,
             guidance_scale=guidance, cache=recording)
    return recording.runs[0].change


def chosen_branches(strategy: str, ratio: float, num_branches: int, generator: torch.Generator,
                    change: torch.Tensor | None = None) -> list[int]:
    """Indices 2b + j of the branches to reuse/drop in one cache step."""
    k = round(ratio * num_branches)
    if strategy == "greedy":
        return torch.argsort(change.reshape(-1), stable=True)[:k].tolist()  # least change first
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
    shifted: bool = True  # U-ViT: False puts the cache step at each solver step's midpoint (Table 6)
    name = "heuristic"
    label = "Heuristic"  # in tables and plots (analysis/labels.py)
    summary = ("reuse a fixed share of branches in L2C's cache steps (bottom, top, random or greedy; paper "
               "Fig. 4)")
    description = ("reuse a fixed share of branches in L2C's cache steps (paper Fig. 4); greedy picks the "
                   "branches whose output changes least between evaluations on 4 calibration samples")
    parameter_notes = {"strategy": "`bottom`; or `top`, `random`, `greedy`"}
    drop = False

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise CacheConfigError(f"cache.strategy={self.strategy!r} is unknown; valid: {', '.join(STRATEGIES)}")
        if not 0.0 <= float(self.ratio) <= 1.0:
            raise CacheConfigError(f"cache.ratio={self.ratio} must lie in [0, 1]")

    @property
    def plans_without_weights(self) -> bool:
        return self.strategy != "greedy"  # greedy calibrates on the real model

    def plan(self, *, model, sampler: str, nfe: int) -> Plan:
        blocks = model.num_blocks
        generator = torch.Generator().manual_seed(int(self.seed))
        compute = [((True, True),) * blocks for _ in range(nfe)]
        pairs = l2c_cache_steps(model.family, sampler, nfe, shifted=bool(self.shifted))
        change = branch_change(model, sampler, nfe) if self.strategy == "greedy" else None
        for n, _ in pairs:
            flat = [True] * (2 * blocks)
            step_change = None if change is None else change[n]
            for index in chosen_branches(self.strategy, self.ratio, 2 * blocks, generator, step_change):
                flat[index] = False
            compute[n] = tuple((flat[2 * b], flat[2 * b + 1]) for b in range(blocks))
        return Plan(tuple(compute), tuple(n for n, _ in pairs), rule=Drop() if self.drop else REUSE)
