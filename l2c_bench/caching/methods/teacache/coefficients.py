"""TeaCache's calibration artifact: its name, its place in the results folder, and reading its
coefficients back for a run (checked against that run's sampler, NFE and blocks). How the
coefficients are fitted: `calibration`."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from ....engine import CacheConfigError
from ....system.files import atomic_path

STORE_DIR = "_calibration"


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
    if not Path(path).is_file():
        raise CacheConfigError(f"cache.coefficients: calibration file not found: {path}")
    content = json.loads(Path(path).read_text())
    got = (content.get("sampler"), content.get("nfe"), content.get("num_blocks"))
    if got != (sampler, nfe, model.num_blocks):
        raise CacheConfigError(f"cache.coefficients: {path} was calibrated for sampler/NFE/blocks {got}, "
                               f"not {(sampler, nfe, model.num_blocks)}")
    return tuple(float(c) for c in content["coefficients"])
