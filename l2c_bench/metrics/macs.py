"""MACs of a sampling run under the schedule that actually ran.

Per-branch costs come from one forward pass of the architecture on the `meta` device under
torch's FlopCounterMode (no weights, no compute), so any size or override is counted exactly.
Two counts:
- `linear`: linear and conv layers only -- the convention of the paper's counter
  (DiT-XL/2 256: 114.4 G per image per evaluation);
- `all`: plus the attention matrix products (QK^T and AV).
Counts are per image and per guidance pass, as the paper reports them; multiply by 2 for the
second CFG pass if you want the work actually done. A block of a reused span runs nothing, its
work outside the branches (norms, modulation, gates, projections) included: `macs(..., plan=)`
leaves that out too (`skipped_blocks`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..engine.model import latent_shape

COUNTS = ("linear", "all")


@dataclass(frozen=True)
class BranchMacs:
    """MACs per image for one evaluation: `base` (outside the branches) + branch[b][j]; `block[b]`
    is the part of `base` inside block b, which runs unless the block is skipped whole."""

    base: float
    branch: tuple[tuple[float, float], ...]
    block: tuple[float, ...] = ()


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

    def outside_branches(attn: tuple[str, ...], mlp: tuple[str, ...]) -> float:
        """A block's work outside its branches: the block's module (their common parent) less them."""
        block = ".".join(os.path.commonprefix([path.split(".") for path in attn + mlp]))
        if not block or block in attn + mlp:
            return 0.0
        return (sum(flops.get(f"{root}.{block}", {}).values())
                - sum(sum(flops.get(f"{root}.{p}", {}).values()) for p in attn + mlp)) / 2

    return BranchMacs(total / 2 - sum(a + m for a, m in branch), branch,
                      tuple(outside_branches(attn, mlp) for attn, mlp in paths))


def branch_macs(model, count: str = "linear") -> BranchMacs:
    if count not in COUNTS:
        raise ValueError(f"MAC count={count!r} is unknown; valid: {', '.join(COUNTS)}")
    return _measure(type(model), model.args, count)


def skipped_blocks(plan, schedule: torch.Tensor) -> torch.Tensor:
    """(nfe, blocks) float: the share of samples in which block b ran nothing at evaluation n, from
    the plan that ran and its realised schedule: the blocks of a span it reused (DeepCache,
    Delta-DiT, FBCache, TeaCache), or under another library's hooks a block none of whose branches
    ran (diffusers' FirstBlockCache and MagCache skip whole blocks; its other hooks reuse attention)."""
    ran = torch.as_tensor(schedule).double().amax(-1)  # (nfe, blocks): the share that ran a branch
    if plan.hooks is not None:
        return 1 - ran
    skipped = torch.zeros_like(ran)
    for n in range(len(ran)):
        span = plan.rule.span_at(n)
        if span is not None:  # a span runs or is reused as one unit
            skipped[n, span[0] : span[1]] = 1 - ran[n, span[0] : span[1]].max()
    return skipped


def macs(model, schedule: torch.Tensor | None, *, nfe: int | None = None, count: str = "linear",
         plan=None) -> float:
    """MACs per image of a run: schedule (nfe, blocks, 2) bool, or None = all computed for `nfe`.
    A float schedule (a dynamic method over several batches: the share of samples that computed
    each branch) gives the mean MACs per image. `plan`: the plan that ran; the blocks it skipped
    whole (`skipped_blocks`) do none of their work outside the branches either (without it, every
    block is counted as run)."""
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
    total = schedule.shape[0] * costs.base + (schedule.double() * per_branch).sum().item()
    if plan is not None:
        outside = torch.tensor(costs.block, dtype=torch.float64)  # (blocks,)
        total -= (skipped_blocks(plan, schedule) * outside).sum().item()
    return total
