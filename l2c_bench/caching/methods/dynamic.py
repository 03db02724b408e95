"""Dynamic whole-model residual reuse: `fbcache` and `teacache`.

Both decide at run time, once per evaluation, whether a span of blocks runs or its cached
residual (span output minus span input, from the last evaluation that ran it) is added to its
current input. The decision reads a scalar from the device, so **each evaluation makes one
host-device synchronisation** (rows say so: `host_sync_per_evaluation`). The decisions are
recorded (`GenerationResult.decisions`, the realised schedule), so MACs and cached ratios are
those of what ran. The first guidance pass decides for every pass of an evaluation.

fbcache -- First-Block-Cache (ParaAttention's FBCache; DBCache's F1B0 setting): the first block
always runs; its residual r is compared with the one of the last evaluation that ran the rest,
and the rest is reused while mean|r - r_ref| / mean|r_ref| < `threshold`. Span: blocks 1..D on
DiT; on U-ViT blocks 1..D-1 (the last out-block consumes the first block's skip, so it runs too).

teacache -- TeaCache (Liu et al., CVPR 2025, "Timestep Embedding Tells: It's Time to Cache"):
the relative L1 change of the first block's timestep-modulated input between consecutive
evaluations (U-ViT, which has no adaLN: of the blocks' input tokens), rescaled by a polynomial
fitted per model, sampler and NFE (`l2c_bench.calibrate`, stored as an artifact), is
accumulated; while the sum stays below `threshold` the whole block stack's residual is reused,
otherwise the stack runs and the sum resets. The first and the last evaluation always run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...engine.core import CacheConfigError, CacheMethod, Plan


def relative_l1(x: torch.Tensor, ref: torch.Tensor) -> float:
    """mean|x - ref| / mean|ref| over the whole batch, as a Python float (a host sync)."""
    return float(((x - ref).abs().mean() / ref.abs().mean().clamp_min(1e-12)).item())


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


def _dynamic_plan(nfe: int, num_blocks: int, span: tuple[int, int], policy) -> Plan:
    compute = tuple(((True, True),) * num_blocks for _ in range(nfe))
    return Plan(compute, tuple(range(1, nfe)), span=span, span_mode="delta", policy=policy)


def _threshold(value, default: float) -> float:
    value = default if value is None else float(value)
    if not value >= 0:
        raise CacheConfigError(f"cache.threshold={value} must be >= 0")
    return value


@dataclass
class FBCache(CacheMethod):
    threshold: float | None = None  # None: 0.08 (ParaAttention's suggested range 0.05-0.1 for DiTs)
    name = "fbcache"
    label = "FBCache"  # in tables and plots (analysis/labels.py)
    decides_at_run_time = True

    def __post_init__(self):
        _threshold(self.threshold, 0.08)

    def plan(self, *, model, sampler: str, nfe: int) -> Plan:
        blocks = model.num_blocks
        span = (1, blocks) if model.family == "dit" else (1, blocks - 1)
        return _dynamic_plan(nfe, blocks, span, FirstBlockPolicy(_threshold(self.threshold, 0.08)))


@dataclass
class TeaCache(CacheMethod):
    threshold: float | None = None  # None: 0.1 (TeaCache's "slow" setting for DiT-like models)
    coefficients: str | list | None = "auto"  # auto: the calibration artifact; a file; or a list
    name = "teacache"
    label = "TeaCache"  # in tables and plots (analysis/labels.py)
    decides_at_run_time = True

    def __post_init__(self):
        _threshold(self.threshold, 0.1)

    def plan(self, *, model, sampler: str, nfe: int) -> Plan:
        from ...calibration import load_coefficients

        if self.coefficients == "auto":
            raise CacheConfigError("cache.coefficients=auto is resolved by `l2c_bench.run` from the calibration "
                                   "store; through the Python API give a list or a calibration file")
        coefficients = (tuple(float(c) for c in self.coefficients) if isinstance(self.coefficients, (list, tuple))
                        else load_coefficients(self.coefficients, model=model, sampler=sampler, nfe=nfe))
        policy = TeaCachePolicy(_threshold(self.threshold, 0.1), coefficients)
        return _dynamic_plan(nfe, model.num_blocks, (0, model.num_blocks), policy)
