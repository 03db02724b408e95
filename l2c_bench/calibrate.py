"""Fit TeaCache's rescaling polynomial for one model, sampler, NFE and guidance scale.

    python -m l2c_bench.calibrate                                     # toy DiT, DDIM, 20 NFE
    python -m l2c_bench.calibrate model=uvit steps=50
    python -m l2c_bench.calibrate scale=paper model=dit model.checkpoint=/ckpt/DiT-XL-2-256x256.pt \\
        calibration.samples=32

Same config tree as `l2c_bench.run`; the artifact goes to
`<results_dir>/_calibration/<name>.json`, where `cache=teacache cache.coefficients=auto` finds it
(at toy scale a missing one is calibrated on first use). `force=true` recalibrates.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from .caching.methods.teacache.calibration import calibrate
from .caching.methods.teacache.coefficients import artifact_name, save, store_path
from .config import register_configs
from .runs.loading import checkpoint_path, file_sha256, load_model
from .system.devices import init_distributed

log = logging.getLogger("l2c_bench.calibrate")
register_configs()


def name_for(cfg: DictConfig, sampler: str) -> str:
    path = checkpoint_path(cfg)
    sha = "random" if path == "random" else file_sha256(path)
    c = cfg.calibration
    return artifact_name(arch=cfg.model.arch, sampler=sampler, nfe=int(cfg.steps),
                         guidance_scale=float(cfg.model.guidance_scale), model_sha256=sha,
                         samples=int(c.samples), seed=int(c.seed), degree=int(c.degree))


def find_or_calibrate(cfg: DictConfig, sampler: str, *, model=None, device=None, force: bool = False) -> Path:
    """The stored calibration for this config; made now if missing (or `force`)."""
    path = store_path(cfg.results_dir, name_for(cfg, sampler))
    if path.is_file() and not force:
        return path
    if model is None:
        device = device or init_distributed(cfg.device)
        model, _ = load_model(cfg, device)
    c = cfg.calibration
    log.info("calibrating TeaCache for %s + %s at %d NFE on %d samples", cfg.model.arch, sampler, cfg.steps, c.samples)
    content = calibrate(model, sampler=sampler, nfe=int(cfg.steps), guidance_scale=float(cfg.model.guidance_scale),
                        guidance_channels=int(cfg.model.guidance_channels), samples=int(c.samples),
                        seed=int(c.seed), degree=int(c.degree))
    content.update(name=path.stem, arch=cfg.model.arch, model_checkpoint=str(checkpoint_path(cfg)))
    save(path, content)
    return path


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    sampler = cfg.sampler.name or cfg.model.default_sampler
    path = find_or_calibrate(cfg, sampler, force=bool(cfg.force))
    print(path)


if __name__ == "__main__":
    main()
