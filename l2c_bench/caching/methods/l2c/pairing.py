"""Which evaluations are L2C cache steps, and which router row decides each (official code).

DiT + DDIM (N NFE): evaluation n runs respaced index i = N-1-n; i odd -> full step, i even
(the last step, i = 0, included) -> cache step decided by router row i.
U-ViT + DPM-Solver-2 (N NFE, N/2 steps): evaluation 2k is step k's first evaluation (at s),
2k+1 its midpoint. For k >= 1 the first evaluation is the cache step ("shifted" cache step),
reusing the previous midpoint, decided by router row k.

Longer cycles (`interval` k >= 2, DiT + DDIM; k = 2 is the paper): index i is a full step iff
i % k == 1 (the first evaluation always is), so each full step is followed by k-1 cache steps
that all reuse it; cache step i is `distance` = i_full - i indices after its full step.
"""

from __future__ import annotations

from ....engine.core import CacheConfigError, UnsupportedCombination


def l2c_cache_steps(family: str, sampler: str, nfe: int, shifted: bool = True,
                    interval: int = 2) -> list[tuple[int, int]]:
    """[(evaluation index, router row)] of the cache steps.

    `shifted=False` (U-ViT only, paper Table 6's "Cache (all layers)" row): the cache step is the
    midpoint evaluation 2k+1 of every solver step k, reusing that step's first evaluation.
    """
    return [(n, row) for n, row, _ in l2c_cycle(family, sampler, nfe, shifted, interval)]


def check_l2c_interval(interval) -> None:
    """`cache.interval` of L2C: a wrong value, not a combination the method leaves undefined, so a
    CacheConfigError (the run fails), never UnsupportedCombination (a sweep's `unsupported` row)."""
    if int(interval) != interval or interval < 2:
        raise CacheConfigError(f"cache.interval={interval}: an L2C cycle is one full step and "
                               "interval-1 >= 1 cache steps, so interval must be an integer >= 2")


def l2c_cycle(family: str, sampler: str, nfe: int, shifted: bool = True,
              interval: int = 2) -> list[tuple[int, int, int]]:
    """[(evaluation index, router row, distance in evaluations to the full step it reuses)]."""
    check_l2c_interval(interval)
    if (family, sampler) in (("dit", "ddim"), ("flow", "flow_euler")):  # one evaluation per step
        if not shifted:
            raise UnsupportedCombination("the non-shifted cache step is a DPM-Solver-2 (U-ViT) notion; "
                                         f"{sampler} has one evaluation per step")
        out, last_full = [], None
        for n in range(nfe):
            i = nfe - 1 - n  # respaced index, counting down
            if n == 0 or i % interval == 1 % interval:
                last_full = n
            else:
                out.append((n, i, n - last_full))
        return out
    if family == "uvit" and sampler == "dpm_solver2":
        if interval != 2:
            raise UnsupportedCombination(
                f"cache.interval={interval}: on U-ViT + DPM-Solver-2 every solver step's midpoint is a full "
                "evaluation, so only the paper's interval 2 is defined (longer cycles: DiT + DDIM)")
        if not shifted:
            return [(2 * k + 1, k, 1) for k in range(nfe // 2)]
        return [(2 * k, k, 1) for k in range(1, nfe // 2)]
    raise UnsupportedCombination(
        f"L2C's step pairing is defined for DiT+ddim, U-ViT+dpm_solver2 and flow+flow_euler, not {family}+{sampler}"
    )
