"""TeaCache's rescaling polynomial: fitted per model, sampler and NFE, stored as an artifact.

Calibration samples `samples` images uncached and records, per evaluation n >= 1, the indicator
x_n (relative L1 change of the first block's modulated input, see teacache.policy) and
the quantity it should predict, y_n (relative L1 change of the model's output); a degree-`degree`
polynomial y ~ p(x) is fitted by least squares (numpy.polyfit). Artifact:
`<results_dir>/_calibration/teacache-<arch>-<sampler>-nfe<N>-<key>.json` with the coefficients,
the (x, y) points, the fit's RMSE and the key's inputs (weights SHA-256, arch, sampler, NFE,
guidance, samples, seed, degree).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ....description import RunDescription
from ....description.commands import command, group_overrides, run_overrides
from ....engine import CacheMethod, CacheRun, Plan
from ....models.loading import RunConfigError, checkpoint_path, load_model, model_fingerprint
from ....pipeline import generate
from ....system.devices import init_distributed
from ..dynamic import relative_l1
from .coefficients import artifact_name, save, store_path
from .policy import TeaCachePolicy, stack_plan

log = logging.getLogger("l2c_bench.calibrate")


class _Recording(CacheMethod):
    """TeaCache's indicator on every evaluation, never reusing: with identity rescaling the sum of
    relative changes is >= 0, so it never stays below threshold 0. Keeps its per-batch runs."""

    name = "teacache"

    def __init__(self):
        self.runs: list[CacheRun] = []

    def plan(self, *, model, sampler: str, nfe: int) -> Plan:
        return stack_plan(nfe, model.num_blocks, TeaCachePolicy(0.0, (1.0, 0.0)))

    def run(self, plan) -> CacheRun:
        self.runs.append(CacheRun(plan))
        return self.runs[-1]


@torch.no_grad()
def calibrate(model, *, sampler: str, nfe: int, guidance_scale: float, guidance_channels: int | None = None,
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
    # (x_n, y_n) for n >= 1; none where the policy restarted (a two-expert model's switch, Wan 2.2:
    # the change there is of the model, not along one model's trajectory)
    pairs = [(float(v), relative_l1(firsts[n], firsts[n - 1]))
             for n, v in enumerate(recording.runs[0].indicators[1:], start=1) if v is not None]
    x, y = [p[0] for p in pairs], [p[1] for p in pairs]
    degree = min(degree, len(x) - 1)
    coefficients = np.polyfit(np.asarray(x), np.asarray(y), degree)
    rmse = float(np.sqrt(np.mean((np.polyval(coefficients, x) - np.asarray(y)) ** 2)))
    return {"method": "teacache", "coefficients": [float(c) for c in coefficients], "degree": degree,
            "x": x, "y": y, "rmse": rmse, "sampler": sampler, "nfe": nfe, "guidance_scale": guidance_scale,
            "samples": samples, "seed": seed, "num_blocks": model.num_blocks, "family": model.family}


def name_for(run: RunDescription) -> str:
    sha = model_fingerprint(run.model) or "random"
    c = run.calibration
    return artifact_name(arch=run.model.arch, sampler=run.sampler.name, nfe=run.steps,
                         guidance_scale=float(run.model.guidance_scale), model_sha256=sha,
                         samples=int(c.samples), seed=int(c.seed), degree=int(c.degree))


def find_or_calibrate(run: RunDescription, *, model=None, device=None, force: bool = False) -> Path:
    """The stored calibration for this run; made now if missing (or `force`)."""
    path = store_path(run.results_dir, name_for(run))
    if path.is_file() and not force:
        return path
    if model is None:
        device = device or init_distributed(run.device)
        model, _ = load_model(run.model, device)
    c = run.calibration
    log.info("calibrating TeaCache for %s + %s at %d NFE on %d samples", run.model.arch, run.sampler.name, run.steps,
             c.samples)
    content = calibrate(model, sampler=run.sampler.name, nfe=run.steps, guidance_scale=float(run.model.guidance_scale),
                        guidance_channels=run.model.guidance_channels, samples=int(c.samples),
                        seed=int(c.seed), degree=int(c.degree))
    content.update(name=path.stem, arch=run.model.arch, model_checkpoint=str(checkpoint_path(run.model)))
    save(path, content)
    return path


def calibration_command(run: RunDescription) -> str:
    """The command that makes the calibration this run looks for (commands.py: it composes back)."""
    return command("l2c_bench.calibrate", run_overrides(run) + group_overrides("calibration", run.calibration))


def check_calibration(run: RunDescription) -> None:
    """At paper scale the calibration must be stored already: a missing one is an error, before any
    compute, printing the command that makes it (at toy scale it is made on first use)."""
    path = store_path(run.results_dir, name_for(run))
    if run.scale.name != "toy" and not path.is_file():
        raise RunConfigError(f"cache.coefficients=auto: no TeaCache calibration at {path}. Make it with\n"
                             f"  {calibration_command(run)}\nor give cache.coefficients=<file or list>.")


def calibration_for(run: RunDescription, model) -> Path:
    """TeaCache's calibration for this run: stored, or made now at toy scale (`check_calibration`)."""
    check_calibration(run)
    return find_or_calibrate(run, model=model)
