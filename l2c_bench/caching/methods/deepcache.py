"""`deepcache`: block-level reuse through the engine's span mechanism (`faster_diffusion` builds on
its `span_plan`).

deepcache (Ma et al., CVPR 2024), as the L2C paper compares it on U-ViT-H/2 (Table 3): every
`interval`-th evaluation is full; in between, the `depth` shallowest in-blocks and out-blocks
(with their skips) run fresh while the deep part -- the remaining in-blocks, the mid block
and the matching out-blocks -- is reused as one unit (its output feature). On DiT, the
transformer adaptation: the first and last `depth` blocks run fresh and the residual update
of the middle span is reused.

MACs: branch MACs of reused blocks are removed; skip_linear of reused U-ViT out-blocks still
counts as computed (a small over-count for deepcache on U-ViT).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...engine.core import (
    CacheConfigError,
    CacheMethod,
    Plan,
    check_interval,
)
from ...engine.rules import Span


def span_plan(nfe: int, num_blocks: int, full: set[int], span: tuple[int, int], mode: str) -> Plan:
    start, end = span
    fresh = ((True, True),) * num_blocks
    reused = tuple((False, False) if start <= b < end else (True, True) for b in range(num_blocks))
    compute = tuple(fresh if n in full else reused for n in range(nfe))
    return Plan(compute, tuple(n for n in range(nfe) if n not in full), rule=Span((span,) * nfe, mode))


@dataclass
class DeepCache(CacheMethod):
    interval: int = 2
    depth: int = 1
    name = "deepcache"
    label = "DeepCache"  # in tables and plots (analysis/labels.py)
    summary = "DeepCache: shallow blocks fresh, the deep part reused"
    description = ("U-ViT: shallow `depth` in/out blocks fresh, the deep part reused; DiT: the middle span's "
                   "residual update reused")

    def __post_init__(self):
        check_interval(self.interval)
        if int(self.depth) != self.depth or self.depth < 0:
            raise CacheConfigError(f"cache.depth={self.depth} must be an integer >= 0")

    def plan(self, *, model, sampler: str, nfe: int) -> Plan:
        blocks = model.num_blocks
        if 2 * self.depth >= blocks:
            raise CacheConfigError(f"cache.depth={self.depth} leaves no deep blocks to reuse in {blocks} blocks")
        full = {n for n in range(nfe) if n % self.interval == 0}
        # long skips (U-ViT): the deep part's output feature is reused; one residual stream: its update
        mode = "output" if model.long_skips else "delta"
        return span_plan(nfe, blocks, full, (self.depth, blocks - self.depth), mode)
