"""`easycache`: EasyCache (Zhou et al., 2025, "Less is Enough: Training-Free Video Diffusion
Acceleration via Runtime-Adaptive Caching"): no calibration. At each computed evaluation the
*transformation rate* k = mean|out_n - out_m| / mean|in_n - in_m| between it and the previous
computed evaluation m is measured; at a later evaluation the output change is predicted as
k * mean|in_n - in_{n-1}| / mean|out_m| and accumulated since the last computed evaluation; while
the sum stays below `threshold` the whole block stack adds its cached residual update.

The rule is the authors' (H-EmbodVis/EasyCache, EasyCache4Wan2.1/easycache_generate.py,
`easycache_forward`): the first `warmup` evaluations and the last one always compute (their
`ret_steps`, `cutoff_steps`); the input difference is to the previous evaluation's input, computed
or not; the output norm and k come from computed evaluations only; k needs two computed evaluations.

What differs, and why: the authors cache the whole network's map latent -> prediction (its
"raw" input and output); our engine's run-time unit is the block stack, so in, out are the
stack's input and output tokens (N, T, D) and the patch embedding and final layer still run (they
are linear in the latent, so the rate's input ratio is the same; < 1% of the MACs). The authors
decide on the conditional pass and reuse both CFG halves; here the first guidance pass decides
(DiT's batched CFG: both halves in one mean), as for `fbcache` and `teacache`.

Decided at run time: see `dynamic` (one host sync per evaluation: k stays on the device)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...engine import CacheConfigError, CacheMethod, Plan
from .dynamic import check_threshold, dynamic_plan

DEFAULT_THRESHOLD = 0.05  # the authors' Wan 2.1 default (`--thresh`)
WARMUP_SHARE = 0.2  # the authors' Wan 2.1 `ret_steps`: 10 of 50 steps


def _mean_abs(x: torch.Tensor) -> torch.Tensor:
    return x.float().abs().mean()


@dataclass
class EasyCachePolicy:
    threshold: float
    warmup: int  # the first evaluations that always compute

    def start(self) -> dict:
        # previous: the last evaluation's span input; last_in / last_out: the last computed one's;
        # rate: k (a 0-d device tensor) once two evaluations were computed
        return {"previous": None, "last_in": None, "last_out": None, "rate": None, "accumulated": 0.0}

    def decide(self, state: dict, probe, allowed: bool, n: int, nfe: int) -> tuple[bool, float | None]:
        x = probe("input")  # (N, T, D) the block stack's input
        previous, state["previous"] = state["previous"], x
        if n < self.warmup or n >= nfe - 1 or not allowed:
            state["accumulated"] = 0.0
            return False, None
        if previous is None or state["rate"] is None:
            return False, None  # no rate yet: compute (the authors keep the sum here)
        # predicted relative output change: k * |dx| / |out_m| (one host sync)
        change = float((state["rate"] * _mean_abs(x - previous) / _mean_abs(state["last_out"]).clamp_min(1e-12)).item())
        state["accumulated"] += change
        if state["accumulated"] < self.threshold:
            return True, change
        state["accumulated"] = 0.0
        return False, change

    def observe(self, state: dict, span_in: torch.Tensor, span_out: torch.Tensor, n: int) -> None:
        """A computed evaluation: the rate against the previous computed one (stays on the device)."""
        if state["last_out"] is not None:
            state["rate"] = _mean_abs(span_out - state["last_out"]) / _mean_abs(span_in - state["last_in"]).clamp_min(1e-12)
        state["last_in"], state["last_out"] = span_in, span_out


@dataclass
class EasyCache(CacheMethod):
    threshold: float = DEFAULT_THRESHOLD  # tau: the accumulated predicted change allowed before computing
    warmup: int | None = None  # None: the first 20% of the evaluations compute (the authors' 10 of 50)
    name = "easycache"
    label = "EasyCache"  # in tables and plots (analysis/labels.py)
    summary = "EasyCache: reuse the stack while the accumulated, rate-predicted output change stays small"
    description = ("EasyCache (Zhou et al., 2025), no calibration: each computed evaluation measures the "
                   "transformation rate k = |d out| / |d in| since the previous computed one; the predicted "
                   "change k |x_n - x_{n-1}| / |out| is accumulated and the whole block stack reuses its residual "
                   "while the sum stays below `threshold`; the first `warmup` and the last evaluation compute. "
                   "Differs from the authors' code: the stack's input and output tokens stand for the latent and "
                   "the prediction (patch embedding and final layer still run). Dynamic, as fbcache")
    parameter_notes = {"warmup": "null: 20% of the NFE"}
    decides_at_run_time = True

    def __post_init__(self):
        check_threshold(self.threshold, DEFAULT_THRESHOLD)
        if self.warmup is not None and (int(self.warmup) != self.warmup or self.warmup < 1):
            raise CacheConfigError(f"cache.warmup={self.warmup} must be an integer >= 1 (the first evaluation computes)")

    def make_policy(self, nfe: int) -> EasyCachePolicy:
        warmup = max(1, round(WARMUP_SHARE * nfe)) if self.warmup is None else int(self.warmup)
        return EasyCachePolicy(check_threshold(self.threshold, DEFAULT_THRESHOLD), warmup)

    def plan(self, *, model, sampler: str, nfe: int) -> Plan:
        return dynamic_plan(nfe, model.num_blocks, (0, model.num_blocks), self.make_policy(nfe))
