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

import torch

from ...engine import CacheConfigError, CacheMethod, Plan, TokenWise, check_interval


@dataclass(frozen=True)
class StalestTokens:
    """ToCa's token rule (the plan's `TokenWise.rule`): recompute the `share` of tokens whose input moved most
    since their output was cached (relative L2 per token; ties to the longest-cached), keep the rest."""

    def __call__(self, store: dict, key: tuple, share: float, fn, x, *rest):
        """An MLP branch (its store key: (block, 1), or (block, 1, part)) at token share `share`.
        x (N, T, D) is the branch input; the store keeps (output, input it came from, age) per key."""
        if share >= 1.0 or key not in store:
            out = fn(x, *rest)
            store[key] = (out, x, torch.zeros(x.shape[:2], device=x.device))
            return out
        out, x_cached, age = store[key]
        k = max(1, round(share * x.shape[1]))
        change = (x - x_cached).norm(dim=-1) / x_cached.norm(dim=-1).clamp_min(1e-12)  # (N, T)
        picked = (change + 1e-6 * age).topk(k, dim=1).indices  # (N, k), on the device: no host sync
        gather = picked.unsqueeze(-1).expand(-1, -1, x.shape[-1])
        fresh_in = x.gather(1, gather)  # (N, k, D)
        fresh = fn(fresh_in, *rest)  # (N, k, D_out): per-token branch, so a subset runs alone
        out = out.scatter(1, picked.unsqueeze(-1).expand(-1, -1, fresh.shape[-1]), fresh.to(out.dtype))
        store[key] = (out, x_cached.scatter(1, gather, fresh_in.to(x_cached.dtype)), (age + 1).scatter(1, picked, 0.0))
        return out


@dataclass
class ToCa(CacheMethod):
    interval: int = 3
    ratio: float = 0.25  # share of tokens whose MLP is recomputed at a cache step
    name = "toca"
    label = "ToCa"  # in tables and plots (analysis/labels.py)
    summary = "ToCa: reuse attention; each MLP recomputes only the tokens that moved most"
    description = ("ToCa (Zou et al., ICLR 2025), token-wise: full every `interval`; in between attention is "
                   "reused and each MLP recomputes the `ratio` share of tokens whose input moved most since "
                   "cached (device top-k, no host sync); MACs count that share")

    def __post_init__(self):
        check_interval(self.interval)
        if not 0.0 < float(self.ratio) <= 1.0:
            raise CacheConfigError(f"cache.ratio={self.ratio} (share of tokens recomputed) must lie in (0, 1]")

    def plan(self, *, model, sampler: str, nfe: int) -> Plan:
        blocks, full = model.num_blocks, [n % self.interval == 0 for n in range(nfe)]
        compute = tuple(((f, True),) * blocks for f in full)  # MLP always (partly) runs; attention when full
        ratios = tuple(1.0 if f else float(self.ratio) for f in full)
        return Plan(compute, tuple(n for n in range(nfe) if not full[n]), rule=TokenWise(ratios, StalestTokens()))
