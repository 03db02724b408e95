"""`delta_dit`: Delta-DiT (Chen et al., 2024, "Δ-DiT: A Training-Free Acceleration Method
Tailored for Diffusion Transformers"), Δ-Cache, as we apply it to DiT.

A span of `blocks` consecutive blocks runs as one unit whose *offset* (span output minus span
input, the paper's Δ) is cached at key evaluations and added to the span's current input at the
others. The paper's stage rule: the early evaluations (before `boundary`, outline generation)
cache the rear span (the last `blocks` blocks, which shape details), the later ones the front
span (the first `blocks`). Within each stage every `interval`-th evaluation is a key evaluation,
counted from the stage's start, so each span is computed before it is reused. Static schedule:
MACs and cached ratio are exact; no host synchronisation. Defaults: interval 2, half the blocks,
boundary at half the NFE.

Not U-ViT: its long skips make a span's offset depend on more than its input. Any model whose
blocks run in sequence takes it (DiT, and diffusers' DiT, PixArt, SD3 and Flux).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...engine.core import (
    CacheConfigError,
    CacheMethod,
    Plan,
    UnsupportedCombination,
    check_interval,
)
from ...engine.rules import Span


def delta_dit_plan(nfe: int, num_blocks: int, interval: int, blocks: int, boundary: int) -> Plan:
    """Pure: the Δ-Cache schedule; evaluation n < boundary uses the rear span, the rest the front."""
    if not 1 <= blocks <= num_blocks:
        raise CacheConfigError(f"cache.blocks={blocks} must lie in [1, {num_blocks}]")
    if not 0 <= boundary <= nfe:
        raise CacheConfigError(f"cache.boundary={boundary} must lie in [0, {nfe}]")
    rear, front = (num_blocks - blocks, num_blocks), (0, blocks)
    compute, spans, cache_steps = [], [], []
    for n in range(nfe):
        span, stage_start = (rear, 0) if n < boundary else (front, boundary)
        key = (n - stage_start) % interval == 0
        compute.append(tuple((True, True) if key or not span[0] <= b < span[1] else (False, False)
                             for b in range(num_blocks)))
        spans.append(span)
        if not key:
            cache_steps.append(n)
    return Plan(tuple(compute), tuple(cache_steps), rule=Span(tuple(spans), "delta"),
                notes={"boundary": boundary, "rear": rear, "front": front})


@dataclass
class DeltaDiT(CacheMethod):
    interval: int = 2
    blocks: int | None = None  # None: half of the model's blocks
    boundary: int | None = None  # None: half of the NFE
    name = "delta_dit"
    label = "Δ-DiT"  # in tables and plots (analysis/labels.py)
    summary = "Δ-DiT, not U-ViT: a span of blocks reuses its cached offset (output - input)"
    description = ("Delta-DiT (Chen et al., 2024), not U-ViT (its long skips): a span of `blocks` blocks "
                   "reuses its cached offset (output - input) between key evaluations; the rear span before "
                   "`boundary`, the front span after")
    parameter_notes = {"blocks": "null: half of the blocks", "boundary": "null: half of the NFE"}

    def __post_init__(self):
        check_interval(self.interval)

    def plan(self, *, model, sampler: str, nfe: int) -> Plan:
        if model.long_skips:
            raise UnsupportedCombination("delta_dit caches a block span's offset; U-ViT's long skips "
                                         "make a span's effect depend on more than its input")
        blocks = model.num_blocks // 2 if self.blocks is None else int(self.blocks)
        boundary = nfe // 2 if self.boundary is None else int(self.boundary)
        return delta_dit_plan(nfe, model.num_blocks, int(self.interval), blocks, boundary)
