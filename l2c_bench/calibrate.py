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

import hydra
from omegaconf import DictConfig

from .caching.methods.teacache.calibration import find_or_calibrate
from .config import CONF_DIR, register_configs
from .runs.prepare import describe

register_configs()


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run = describe(cfg)
    path = find_or_calibrate(run, force=run.force)
    print(path)


if __name__ == "__main__":
    main()
