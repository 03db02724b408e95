"""The noise level of every evaluation a sampler makes, on one scale: the rectified-flow sigma in
[0, 1] with x_t = (1 - sigma) x_0 + sigma eps. A VP state x = alpha x_0 + s eps divided by
(alpha + s) is that form, so sigma = s / (alpha + s). SeaCache's spectral filter reads it (its
Wiener gain depends only on the ratio of noise to signal, which this rescaling keeps)."""

from __future__ import annotations

import numpy as np

from ...engine import UnsupportedCombination


def _vp_to_flow(alpha, s) -> list[float]:
    alpha, s = np.asarray(alpha, dtype=np.float64), np.asarray(s, dtype=np.float64)
    return [float(v) for v in s / (alpha + s)]


def flow_sigmas(sampler: str, nfe: int, model) -> list[float]:
    """(nfe,) the flow sigma at each evaluation, in the order the sampler makes them."""
    if sampler in ("ddim", "ddpm"):  # DiT's respaced schedule, evaluated from k = K-1 down to 0
        from ...sampling.diffusion import SpacedDiffusion

        abar = SpacedDiffusion.create(nfe).alphas_cumprod[::-1]
        return _vp_to_flow(np.sqrt(abar), np.sqrt(1.0 - abar))
    if sampler == "dpm_solver2":  # per step: the evaluation at s, then at its log-SNR midpoint s1
        import torch

        from ...sampling.dpm_solver import DiscreteVPSchedule, DPMSolver2Steps

        table = DPMSolver2Steps(nfe, DiscreteVPSchedule(), torch.device("cpu")).table.double()
        cols = DPMSolver2Steps.COLUMNS
        s = table[:, [cols.index("sigma_s"), cols.index("sigma_s1")]].reshape(-1).numpy()
        alpha = table[:, [cols.index("alpha_s"), cols.index("alpha_s1")]].reshape(-1).numpy()
        return _vp_to_flow(alpha, s)
    if sampler == "flow_euler":
        import torch

        from ...sampling.flow import FlowEulerSteps

        return [float(v) for v in FlowEulerSteps(nfe, model.flow_shift, torch.device("cpu")).sigmas[:nfe]]
    raise UnsupportedCombination(f"the noise level of each evaluation of sampler {sampler!r} is not tabulated "
                                 "(dpm_solver_fast computes its steps in its loop): SeaCache's filter needs it")
