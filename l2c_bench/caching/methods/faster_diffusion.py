"""`faster_diffusion`: Faster Diffusion (Li et al., 2023, "encoder propagation"), U-ViT only: at
non-key evaluations the in-blocks and the mid block are reused (output and the skips they feed),
the out-blocks are recomputed. Key evaluations: every `interval`-th, or the explicit `key_steps`.

MACs: as `deepcache` (reused blocks' branch MACs removed)."""

from __future__ import annotations

from dataclasses import dataclass

from ...engine import CacheConfigError, CacheMethod, Plan, UnsupportedCombination, check_interval
from .deepcache import span_plan


@dataclass
class FasterDiffusion(CacheMethod):
    interval: int = 2
    key_steps: list[int] | None = None  # evaluation indices that run in full (overrides interval)
    name = "faster_diffusion"
    label = "Faster Diffusion"  # in tables and plots (analysis/labels.py)
    summary = "Faster Diffusion, U-ViT only: in-blocks and mid block reused at non-key evaluations"
    description = ("U-ViT only: in-blocks + mid block reused at non-key evaluations (every `interval`-th is a"
                   " key evaluation, or the listed `key_steps`)")
    parameter_notes = {"key_steps": "null, or the evaluations that run in full"}

    def __post_init__(self):
        check_interval(self.interval)

    def plan(self, *, model, sampler: str, nfe: int) -> Plan:
        if model.mid_block_index is None:
            raise UnsupportedCombination("faster_diffusion propagates a U-Net/U-ViT encoder; "
                                         f"{model.family} has no encoder/decoder split")
        if self.key_steps is not None:
            full = {int(n) for n in self.key_steps}
            if 0 not in full or not all(0 <= n < nfe for n in full):
                raise CacheConfigError(f"cache.key_steps={list(self.key_steps)} must include 0 and lie in [0, {nfe})")
        else:
            full = {n for n in range(nfe) if n % self.interval == 0}
        mid = model.mid_block_index  # index of the mid block: the encoder's end
        return span_plan(nfe, model.num_blocks, full, (0, mid + 1), "output")
