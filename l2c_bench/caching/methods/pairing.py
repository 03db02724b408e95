"""Which evaluations are L2C cache steps, and which router row decides each (official code).

DiT + DDIM (N NFE): evaluation n runs respaced index i = N-1-n; i odd -> full step, i even
(the last step, i = 0, included) -> cache step decided by router row i.
U-ViT + DPM-Solver-2 (N NFE, N/2 steps): evaluation 2k is step k's first evaluation (at s),
2k+1 its midpoint. For k >= 1 the first evaluation is the cache step ("shifted" cache step),
reusing the previous midpoint, decided by router row k.
"""

from __future__ import annotations

from ..engine import UnsupportedCombination


def l2c_cache_steps(family: str, sampler: str, nfe: int, shifted: bool = True) -> list[tuple[int, int]]:
    """[(evaluation index, router row)] of the cache steps.

    `shifted=False` (U-ViT only, paper Table 6's "Cache (all layers)" row): the cache step is the
    midpoint evaluation 2k+1 of every solver step k, reusing that step's first evaluation.
    """
    if family == "dit" and sampler == "ddim":
        if not shifted:
            raise UnsupportedCombination("the non-shifted cache step is a DPM-Solver-2 (U-ViT) notion; "
                                         "DDIM has one evaluation per step")
        return [(n, nfe - 1 - n) for n in range(1, nfe) if (nfe - 1 - n) % 2 == 0]
    if family == "uvit" and sampler == "dpm_solver2":
        if not shifted:
            return [(2 * k + 1, k) for k in range(nfe // 2)]
        return [(2 * k, k) for k in range(1, nfe // 2)]
    raise UnsupportedCombination(
        f"L2C's step pairing is defined for DiT+ddim and U-ViT+dpm_solver2, not {family}+{sampler}"
    )
