"""The configured diffusion model and VAE, loaded strictly (shared by the run, router learning and calibration)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from omegaconf import DictConfig

from . import build_model, load_checkpoint

TOY_ASSETS = Path(__file__).resolve().parents[1] / "toy" / "assets"
_FINGERPRINTS: dict[tuple, str] = {}


class RunConfigError(ValueError):
    """A configuration value that cannot work; raised before any compute."""


def checkpoint_path(cfg: DictConfig):
    """model.checkpoint with `toy` resolved to the shipped asset; `random` stays `random`."""
    if cfg.model.checkpoint == "toy":
        if cfg.scale.name != "toy":
            raise RunConfigError("model.checkpoint=toy only exists at scale=toy")
        return TOY_ASSETS / f"{cfg.model.family}_toy.pt"
    return cfg.model.checkpoint


def file_sha256(path: str | os.PathLike) -> str:
    """Content hash of a checkpoint (memoised per path, size and mtime: a paper-scale file is GBs)."""
    path = Path(path)
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _FINGERPRINTS:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 24), b""):
                digest.update(chunk)
        _FINGERPRINTS[memo] = digest.hexdigest()
    return _FINGERPRINTS[memo]


def load_model(cfg: DictConfig, device: torch.device):
    """The diffusion model (and VAE, or None) as configured; checkpoints load strictly."""
    checkpoint = checkpoint_path(cfg)
    if checkpoint == "random":
        model = build_model(cfg.model.arch, **cfg.model.overrides)
    else:  # built weightless, then given the file's tensors: no wasted init of a large model
        model = build_model(cfg.model.arch, device="meta", **cfg.model.overrides)
        load_checkpoint(model, checkpoint, config_key="model.checkpoint")
    vae = None
    if cfg.model.vae == "sd":
        from .vae import build_vae, load_vae

        if checkpoint == "random" or cfg.model.vae_checkpoint == "random":
            vae = build_vae()  # speed studies: weights do not matter
        else:
            vae = load_vae(cfg.model.vae_checkpoint, config_key="model.vae_checkpoint")
        vae = vae.to(device)
    return model.to(device).eval().requires_grad_(False), vae
