"""`fbcache`: First-Block-Cache (ParaAttention's FBCache; DBCache's F1B0 setting): the first block
always runs; its residual r is compared with the one of the last evaluation that ran the rest,
and the rest is reused while mean|r - r_ref| / mean|r_ref| < `threshold`. Span: blocks 1..D on
DiT; with long skips (U-ViT, `model.long_skips`) blocks 1..D-1 (the last out-block consumes the
first block's skip, so it runs too).

Decided at run time: see `dynamic` (one host sync per evaluation)."""

from __future__ import annotations

from dataclasses import dataclass

from ...engine import CacheMethod, Plan
from .dynamic import check_threshold, dynamic_plan, relative_l1


@dataclass
class FirstBlockPolicy:
    threshold: float

    def start(self) -> dict:
        return {"ref": None}

    def decide(self, state: dict, probe, allowed: bool, n: int, nfe: int) -> tuple[bool, float | None]:
        residual = probe("residual")
        if state["ref"] is None:
            state["ref"] = residual
            return False, None
        change = relative_l1(residual, state["ref"])
        if allowed and change < self.threshold:
            return True, change  # the reference stays the last evaluation that ran the rest
        state["ref"] = residual
        return False, change


@dataclass
class FBCache(CacheMethod):
    threshold: float | None = None  # None: 0.08 (ParaAttention's suggested range 0.05-0.1 for DiTs)
    name = "fbcache"
    label = "FBCache"  # in tables and plots (analysis/labels.py)
    summary = "First-Block-Cache: reuse the rest while the first block's residual barely changes"
    description = ("First-Block-Cache: the first block always runs; the rest reuses its cached residual while"
                   " the first block's residual changed less than `threshold` (relative L1) since the rest "
                   "last ran. Decided at run time: one host sync per evaluation (`host_sync_per_evaluation` "
                   "in the row); MACs and ratios are of what ran")
    parameter_notes = {"threshold": "null: 0.08"}
    decides_at_run_time = True

    def __post_init__(self):
        check_threshold(self.threshold, 0.08)

    def plan(self, *, model, sampler: str, nfe: int) -> Plan:
        blocks = model.num_blocks
        # long skips (U-ViT): the last block reads block 0's skip, so it runs whenever block 0 does
        span = (1, blocks - 1) if model.long_skips else (1, blocks)
        return dynamic_plan(nfe, blocks, span, FirstBlockPolicy(check_threshold(self.threshold, 0.08)))
