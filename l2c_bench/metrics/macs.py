"""MACs of a sampling run under the schedule that actually ran.

Per-branch costs come from one forward pass of the architecture on the `meta` device under
torch's FlopCounterMode (no weights, no compute), so any size or override is counted exactly.
Two counts:
- `linear`: linear and conv layers only -- the convention of the paper's counter
  (DiT-XL/2 256: 114.4 G per image per evaluation);
- `all`: plus the attention matrix products (QK^T and AV).
Counts are per image and per guidance pass, as the paper reports them; multiply by 2 for the
second CFG pass if you want the work actually done.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..engine.model import latent_shape

COUNTS = ("linear", "all")


@dataclass(frozen=True)
class BranchMacs:
    """MACs per image for one evaluation: `base` (always computed) + branch[b][j]."""

    base: float
    branch: tuple[tuple[float, float], ...]


@lru_cache(maxsize=32)
def _measure(cls: type, args, count: str) -> BranchMacs:
    with torch.device("meta"):
        model = cls(args)
    x = torch.empty(1, *latent_shape(model), device="meta")  # one sample (video: (1, C, F, H, W))
    t = torch.zeros(1, device="meta")
    y = torch.zeros(1, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as counter:
        model(x, t, y)
    flops = counter.get_flop_counts()
    bmm = torch.ops.aten.bmm

    root = type(model).__name__

    def cost(paths: tuple[str, ...], attention: bool) -> float:
        total = 0.0
        for path in paths:
            ops = flops.get(f"{root}.{path}", {})
            # attention products run as bmm inside the attention module (not in its qkv/proj
            # children; scaled_dot_product_attention decomposes to bmm on the meta device)
            total += sum(ops.values()) - (ops.get(bmm, 0) if attention and count == "linear" else 0)
        return total

    paths = model.branch_paths()  # per block: (attention module paths, MLP module paths)
    branch = tuple((cost(attn, True) / 2, cost(mlp, False) / 2) for attn, mlp in paths)
    attention_products = sum(flops.get(f"{root}.{p}", {}).get(bmm, 0) for attn, _ in paths for p in attn)
    total = sum(flops["Global"].values()) - (attention_products if count == "linear" else 0)
    return BranchMacs(total / 2 - sum(a + m for a, m in branch), branch)


def branch_macs(model, count: str = "linear") -> BranchMacs:
    if count not in COUNTS:
        raise ValueError(f"MAC count={count!r} is unknown; valid: {', '.join(COUNTS)}")
    return _measure(type(model), model.args, count)


def macs(model, schedule: torch.Tensor | None, *, nfe: int | None = None, count: str = "linear") -> float:
    """MACs per image of a run: schedule (nfe, blocks, 2) bool, or None = all computed for `nfe`.
    A float schedule (a dynamic method over several batches: the share of samples that computed
    each branch) gives the mean MACs per image."""
    costs = branch_macs(model, count)
    per_branch = torch.tensor(costs.branch, dtype=torch.float64)  # (blocks, 2)
    if schedule is None:
        if nfe is None:
            raise ValueError("give a schedule or nfe")
        return nfe * (costs.base + per_branch.sum().item())
    schedule = torch.as_tensor(schedule)
    if not schedule.is_floating_point():
        schedule = schedule.bool()
    if schedule.shape[1:] != per_branch.shape:
        raise ValueError(f"schedule shape {tuple(schedule.shape)} does not fit {per_branch.shape[0]} blocks")
    return schedule.shape[0] * costs.base + (schedule.double() * per_branch).sum().item()
