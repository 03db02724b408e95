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

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import torch

from .caching.methods.dynamic import TeaCache, relative_l1
from .engine.core import CacheRun
from .system.files import atomic_path

STORE_DIR = "_calibration"


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
    from .pipeline import generate

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


def artifact_name(*, arch: str, sampler: str, nfe: int, guidance_scale: float, model_sha256: str,
                  samples: int, seed: int, degree: int) -> str:
    identity = {"arch": arch, "sampler": sampler, "nfe": nfe, "guidance_scale": float(guidance_scale),
                "model_sha256": model_sha256, "samples": samples, "seed": seed, "degree": degree}
    key = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    return f"teacache-{re.sub(r'[^A-Za-z0-9]+', '', arch)}-{sampler}-nfe{nfe}-{key}"


def store_path(results_dir: str | os.PathLike, name: str) -> Path:
    return Path(results_dir) / STORE_DIR / f"{name}.json"


def save(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(content, indent=1))


def load_coefficients(path: str | os.PathLike, *, model, sampler: str, nfe: int) -> tuple[float, ...]:
    """The coefficients of a calibration file, checked against the run it is used for."""
    from .engine.core import CacheConfigError

    if not Path(path).is_file():
        raise CacheConfigError(f"cache.coefficients: calibration file not found: {path}")
    content = json.loads(Path(path).read_text())
    got = (content.get("sampler"), content.get("nfe"), content.get("num_blocks"))
    if got != (sampler, nfe, model.num_blocks):
        raise CacheConfigError(f"cache.coefficients: {path} was calibrated for sampler/NFE/blocks {got}, "
                               f"not {(sampler, nfe, model.num_blocks)}")
    return tuple(float(c) for c in content["coefficients"])
