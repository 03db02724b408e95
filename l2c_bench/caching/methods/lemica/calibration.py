"""LeMiCa's edge costs: the global error each cache segment causes on its own.

For a segment (i, j) -- evaluation i computes, i+1..j-1 reuse the whole block stack's residual
update from i, j computes, every other evaluation computes -- the batch is sampled once and its
final latents compared with the uncached ones: relative L1, mean|x - x_ref| / mean|x_ref| over the
batch. That is one sampling run per segment (about nfe * max_reuse of them) plus the reference."""

from __future__ import annotations

import torch

from ....engine import FixedPlan, Plan, Span


def schedule_plan(nfe: int, num_blocks: int, computed) -> Plan:
    """A static plan: the evaluations `computed` run every block, the others add the whole block
    stack's residual update from the last evaluation that ran it (LeMiCa's reuse)."""
    computed = set(computed)
    compute = tuple(((n in computed, n in computed),) * num_blocks for n in range(nfe))
    return Plan(compute, tuple(n for n in range(nfe) if n not in computed),
                rule=Span(((0, num_blocks),) * nfe, "delta"))


def segments(nfe: int, max_reuse: int) -> list[tuple[int, int]]:
    """The DAG's edges that reuse something: (i, j) with 1..max_reuse evaluations between them."""
    return [(i, j) for i in range(nfe - 1) for j in range(i + 2, min(nfe, i + max_reuse + 2))]


@torch.no_grad()
def segment_errors(model, *, sampler: str, nfe: int, max_reuse: int, guidance_scale: float = 1.0,
                   guidance_channels=None, samples: int = 2, seed: int = 0) -> dict[tuple[int, int], float]:
    """{(i, j): the relative L1 error of the final latents when only segment (i, j) reuses}."""
    from ....pipeline import generate

    kw = dict(labels=[k % model.num_classes for k in range(samples)], seeds=list(range(seed, seed + samples)),
              steps=nfe, sampler=sampler, guidance_scale=guidance_scale, guidance_channels=guidance_channels)
    reference = generate(model, **kw).latents.double()
    scale = reference.abs().mean().clamp_min(1e-12)
    errors = {}
    for i, j in segments(nfe, max_reuse):
        computed = [n for n in range(nfe) if not i < n < j]
        plan = FixedPlan(schedule_plan(nfe, model.num_blocks, computed), "lemica_calibration")
        out = generate(model, cache=plan, **kw).latents.double()
        errors[(i, j)] = float((out - reference).abs().mean() / scale)
    return errors
