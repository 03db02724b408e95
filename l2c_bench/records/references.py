"""Uncached latents shared by every results folder on the machine: one file per sample, named by
the hash of everything that determines it (runs.sample.sample_identity), so a new results folder,
a relaunch, another batch size (converged references) or another shard split reads what any
earlier run sampled.

Layout: `<root>/<kind>/<key[:2]>/<key>.pt`, each {"latents": (C, H, W) float tensor, "identity":
what was hashed into the key}, so a file says what it holds; `kind` is `converged`
(the converged reference) or `uncached` (a cached run's uncached twin). Writes are atomic renames,
so concurrent jobs (a SLURM array) that sample the same key each write a whole file and readers
never see half of one. The root: `reference_dir` in the run config, else `$L2C_BENCH_REFERENCES`,
else `$XDG_CACHE_HOME/l2c-bench/references` (`~/.cache/...`).

The package ships the toy models' default points' references (`SHIPPED`, one dict file per kind,
made by `python -m l2c_bench.runs.ship_references`): read after the root's, never written.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

from ..system.files import atomic_path

KINDS = ("converged", "uncached")
SHIPPED = Path(__file__).resolve().parents[1] / "toy" / "assets" / "references"
ENV = "L2C_BENCH_REFERENCES"


def default_root() -> Path:
    """$L2C_BENCH_REFERENCES, else the user's cache folder."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "l2c-bench" / "references"


@functools.lru_cache(maxsize=None)
def shipped(kind: str) -> dict[str, torch.Tensor]:
    """{key: (C, H, W) latents} shipped with the package for `kind` (empty if none)."""
    path = SHIPPED / f"{kind}.pt"
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else {}


class ReferenceStore:
    """Per-sample latents under `root`, then the shipped ones."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root else default_root()

    def path(self, kind: str, key: str) -> Path:
        if kind not in KINDS:
            raise ValueError(f"unknown reference kind {kind!r}: one of {KINDS}")
        return self.root / kind / key[:2] / f"{key}.pt"

    def get(self, kind: str, key: str) -> torch.Tensor | None:
        path = self.path(kind, key)
        if path.is_file():
            return torch.load(path, map_location="cpu", weights_only=True)["latents"]
        return shipped(kind).get(key)

    def put(self, kind: str, key: str, latents: torch.Tensor, identity: dict) -> None:
        with atomic_path(self.path(kind, key)) as tmp:  # concurrent writers: each rename is whole
            # clone: a view would save the whole batch's storage
            torch.save({"latents": latents.detach().cpu().clone(), "identity": identity}, tmp)
