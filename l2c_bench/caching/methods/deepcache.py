"""`deepcache` and `faster_diffusion`: block-level reuse through the engine's span mechanism.

deepcache (Ma et al., CVPR 2024), as the L2C paper compares it on U-ViT-H/2 (Table 3): every
`interval`-th evaluation is full; in between, the `depth` shallowest in-blocks and out-blocks
(with their skips) run fresh while the deep part -- the remaining in-blocks, the mid block
and the matching out-blocks -- is reused as one unit (its output feature). On DiT, the
transformer adaptation: the first and last `depth` blocks run fresh and the residual update
of the middle span is reused.

faster_diffusion (Li et al., 2023, "encoder propagation"), U-ViT only: at non-key evaluations
the in-blocks and the mid block are reused (output and the skips they feed), the out-blocks
are recomputed. Key evaluations: every `interval`-th, or the explicit `key_steps`.

MACs: branch MACs of reused blocks are removed; skip_linear of reused U-ViT out-blocks still
counts as computed (a small over-count for deepcache on U-ViT).
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


def _span_plan(nfe: int, num_blocks: int, full: set[int], span: tuple[int, int], mode: str) -> Plan:
    start, end = span
    fresh = ((True, True),) * num_blocks
    reused = tuple((False, False) if start <= b < end else (True, True) for b in range(num_blocks))
    compute = tuple(fresh if n in full else reused for n in range(nfe))
    return Plan(compute, tuple(n for n in range(nfe) if n not in full), span=span, span_mode=mode)


@dataclass
class DeepCache(CacheMethod):
    interval: int = 2
    depth: int = 1
    name = "deepcache"
    label = "DeepCache"  # in tables and plots (analysis/labels.py)

    def __post_init__(self):
        check_interval(self.interval)
        if int(self.depth) != self.depth or self.depth < 0:
            raise CacheConfigError(f"cache.depth={self.depth} must be an integer >= 0")

    def plan(self, *, model, sampler: str, nfe: int) -> Plan:
        blocks = model.num_blocks
        if 2 * self.depth >= blocks:
            raise CacheConfigError(f"cache.depth={self.depth} leaves no deep blocks to reuse in {blocks} blocks")
        full = {n for n in range(nfe) if n % self.interval == 0}
        mode = "delta" if model.family == "dit" else "output"
        return _span_plan(nfe, blocks, full, (self.depth, blocks - self.depth), mode)


@dataclass
class FasterDiffusion(CacheMethod):
    interval: int = 2
    key_steps: list[int] | None = None  # evaluation indices that run in full (overrides interval)
    name = "faster_diffusion"
    label = "Faster Diffusion"  # in tables and plots (analysis/labels.py)

    def __post_init__(self):
        check_interval(self.interval)

    def plan(self, *, model, sampler: str, nfe: int) -> Plan:
        if model.family != "uvit":
            raise UnsupportedCombination("faster_diffusion propagates a U-Net/U-ViT encoder; "
                                         f"{model.family} has no encoder/decoder split")
        if self.key_steps is not None:
            full = {int(n) for n in self.key_steps}
            if 0 not in full or not all(0 <= n < nfe for n in full):
                raise CacheConfigError(f"cache.key_steps={list(self.key_steps)} must include 0 and lie in [0, {nfe})")
        else:
            full = {n for n in range(nfe) if n % self.interval == 0}
        mid = (model.num_blocks - 1) // 2  # index of the mid block
        return _span_plan(nfe, model.num_blocks, full, (0, mid + 1), "output")
