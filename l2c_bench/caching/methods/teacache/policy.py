"""TeaCache's run-time decision: accumulate the rescaled change of the first block's modulated
input; reuse the stack while the sum stays below the threshold (see `method`)."""

from __future__ import annotations

from dataclasses import dataclass

from ....engine import Plan
from ..dynamic import dynamic_plan, relative_l1


@dataclass
class TeaCachePolicy:
    threshold: float
    coefficients: tuple[float, ...]  # numpy.polyfit order: highest power first

    def start(self) -> dict:
        return {"previous": None, "accumulated": 0.0}

    def rescale(self, x: float) -> float:
        out = 0.0
        for c in self.coefficients:
            out = out * x + c
        return out

    def decide(self, state: dict, probe, allowed: bool, n: int, nfe: int) -> tuple[bool, float | None]:
        modulated = probe("modulated")
        previous, state["previous"] = state["previous"], modulated
        if previous is None:
            return False, None
        change = relative_l1(modulated, previous)
        state["accumulated"] += self.rescale(change)
        if allowed and n < nfe - 1 and state["accumulated"] < self.threshold:
            return True, change
        state["accumulated"] = 0.0
        return False, change


def stack_plan(nfe: int, num_blocks: int, policy: TeaCachePolicy) -> Plan:
    """TeaCache's plan: the whole block stack is the one span its policy runs or reuses."""
    return dynamic_plan(nfe, num_blocks, (0, num_blocks), policy)
