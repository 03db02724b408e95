"""`toca`: ToCa (Zou et al., ICLR 2025, "Accelerating Diffusion Transformers with Token-wise
Feature Caching"), as the token-wise MLP variant the harness compares.

Every `interval`-th evaluation computes every branch for every token. In between, attention is
reused whole and each MLP is recomputed for the `ratio` share of tokens that score highest, the
others keeping their cached outputs. ToCa scores tokens mainly by their attention influence;
fused attention (`scaled_dot_product_attention`) never forms the attention map, so our score
is each token's staleness instead: the relative L2 change of its MLP input since its output was
cached, ties going to the token cached longest (ToCa's cache-frequency term). Selection runs on
the device (top-k), so there is no host synchronisation. MACs count the recomputed share of
each MLP exactly (a static `ratio`); the scoring and gathering are elementwise and not counted,
as for every method.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...engine.core import CacheConfigError, CacheMethod, Plan, check_interval


@dataclass
class ToCa(CacheMethod):
    interval: int = 3
    ratio: float = 0.25  # share of tokens whose MLP is recomputed at a cache step
    name = "toca"
    label = "ToCa"  # in tables and plots (analysis/labels.py)

    def __post_init__(self):
        check_interval(self.interval)
        if not 0.0 < float(self.ratio) <= 1.0:
            raise CacheConfigError(f"cache.ratio={self.ratio} (share of tokens recomputed) must lie in (0, 1]")

    def plan(self, *, model, sampler: str, nfe: int) -> Plan:
        blocks, full = model.num_blocks, [n % self.interval == 0 for n in range(nfe)]
        compute = tuple(((f, True),) * blocks for f in full)  # MLP always (partly) runs; attention when full
        ratios = tuple(1.0 if f else float(self.ratio) for f in full)
        return Plan(compute, tuple(n for n in range(nfe) if not full[n]), token_ratio=ratios)
