"""TeaCache's rescaling polynomial: fitted per model, sampler and NFE, stored as an artifact.

Calibration samples `samples` images uncached and records, per evaluation n >= 1, the indicator
x_n (relative L1 change of the first block's modulated input, see caching.methods.dynamic) and
the quantity it should predict, y_n (relative L1 change of the model's output); a degree-`degree`
polynomial y ~ p(x) is fitted by least squares (numpy.polyfit). Artifact:
`<results_dir>/_calibration/teacache-<arch>-<sampler>-nfe<N>-<key>.json` with the coefficients,
the (x, y) points, the fit's RMSE and the key's inputs (weights SHA-256, arch, sampler, NFE,
guidance, samples, seed, degree).
"""

from __future__ import annotations

import numpy as np
import torch

from ....engine import CacheRun
from ....pipeline import generate
from ..dynamic import relative_l1
from .method import TeaCache


class _Recording(TeaCache):
    """TeaCache's indicator on every evaluation, never reusing: with identity rescaling the sum of
    relative changes is >= 0, so it never stays below threshold 0. Keeps its per-batch runs."""

    def __init__(self):
        super().__init__(threshold=0.0, coefficients=[1.0, 0.0])
        self.runs: list[CacheRun] = []

    def run(self, plan) -> CacheRun:
        self.runs.append(CacheRun(plan))
        return self.runs[-1]


@torch.no_grad()
def calibrate(model, *, sampler: str, nfe: int, guidance_scale: float, guidance_channels: int = 3,
              samples: int = 8, seed: int = 0, degree: int = 4) -> dict:
    """Fit the rescaling polynomial on `samples` uncached samples; returns the artifact's content."""
    outputs: list[torch.Tensor] = []
    hook = model.register_forward_hook(lambda m, args, out: outputs.append(out.detach().float()))
    recording = _Recording()
    try:
        generate(model, labels=[i % model.num_classes for i in range(samples)],
                 seeds=[seed + i for i in range(samples)], steps=nfe, sampler=sampler,
                 guidance_scale=guidance_scale, guidance_channels=guidance_channels, cache=recording)
    finally:
        hook.remove()
    calls = len(outputs) // nfe  # model calls per evaluation (U-ViT: cond and uncond passes)
    firsts = outputs[::calls]  # the first pass of each evaluation, as the indicator's
    x = [float(v) for v in recording.runs[0].indicators[1:]]
    y = [relative_l1(firsts[n], firsts[n - 1]) for n in range(1, nfe)]
    degree = min(degree, len(x) - 1)
    coefficients = np.polyfit(np.asarray(x), np.asarray(y), degree)
    rmse = float(np.sqrt(np.mean((np.polyval(coefficients, x) - np.asarray(y)) ** 2)))
    return {"method": "teacache", "coefficients": [float(c) for c in coefficients], "degree": degree,
            "x": x, "y": y, "rmse": rmse, "sampler": sampler, "nfe": nfe, "guidance_scale": guidance_scale,
            "samples": samples, "seed": seed, "num_blocks": model.num_blocks, "family": model.family}
