"""What the run-time span methods (`fbcache`, `teacache`) share.

Both decide at run time, once per evaluation, whether a span of blocks runs or its cached
residual (span output minus span input, from the last evaluation that ran it) is added to its
current input. The decision reads a scalar from the device, so **each evaluation makes one
host-device synchronisation** (rows say so: `host_sync_per_evaluation`). The decisions are
recorded (`GenerationResult.decisions`, the realised schedule), so MACs and cached ratios are
those of what ran. The first guidance pass decides for every pass of an evaluation.
"""

from __future__ import annotations

import torch

from ...engine import CacheConfigError, Plan, RunTimeSpan


def relative_l1(x: torch.Tensor, ref: torch.Tensor) -> float:
    """mean|x - ref| / mean|ref| over the whole batch, as a Python float (a host sync)."""
    return float(((x - ref).abs().mean() / ref.abs().mean().clamp_min(1e-12)).item())


def dynamic_plan(nfe: int, num_blocks: int, span: tuple[int, int], policy) -> Plan:
    compute = tuple(((True, True),) * num_blocks for _ in range(nfe))
    return Plan(compute, tuple(range(1, nfe)), rule=RunTimeSpan(span, policy))


def check_threshold(value, default: float) -> float:
    value = default if value is None else float(value)
    if not value >= 0:
        raise CacheConfigError(f"cache.threshold={value} must be >= 0")
    return value
