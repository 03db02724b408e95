"""`teacache`: TeaCache (Liu et al., CVPR 2025, "Timestep Embedding Tells: It's Time to Cache"):
the relative L1 change of the first block's timestep-modulated input between consecutive
evaluations (U-ViT, which has no adaLN: of the blocks' input tokens), rescaled by a polynomial
fitted per model, sampler and NFE (`l2c_bench.calibrate`, stored as an artifact), is
accumulated; while the sum stays below `threshold` the whole block stack's residual is reused,
otherwise the stack runs and the sum resets. The first and the last evaluation always run.

Decided at run time: see `..dynamic` (one host sync per evaluation)."""

from __future__ import annotations

from dataclasses import dataclass

from ....engine import CacheConfigError, CacheMethod, Plan
from ..dynamic import check_threshold, dynamic_plan, relative_l1
from .coefficients import load_coefficients


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


@dataclass
class TeaCache(CacheMethod):
    threshold: float | None = None  # None: 0.1 (TeaCache's "slow" setting for DiT-like models)
    coefficients: str | list | None = "auto"  # auto: the calibration artifact; a file; or a list
    name = "teacache"
    label = "TeaCache"  # in tables and plots (analysis/labels.py)
    decides_at_run_time = True

    def __post_init__(self):
        check_threshold(self.threshold, 0.1)

    def plan(self, *, model, sampler: str, nfe: int) -> Plan:
        if self.coefficients == "auto":
            raise CacheConfigError("cache.coefficients=auto is resolved by `l2c_bench.run` from the calibration "
                                   "store; through the Python API give a list or a calibration file")
        coefficients = (tuple(float(c) for c in self.coefficients) if isinstance(self.coefficients, (list, tuple))
                        else load_coefficients(self.coefficients, model=model, sampler=sampler, nfe=nfe))
        policy = TeaCachePolicy(check_threshold(self.threshold, 0.1), coefficients)
        return dynamic_plan(nfe, model.num_blocks, (0, model.num_blocks), policy)
