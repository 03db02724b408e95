"""The router store: learned routers as artifacts, found by key.

An artifact is a router file in the official layout (`routers` of `<i>.prob` logit vectors, so
official and learned routers are interchangeable) plus an `l2c_bench` metadata dict: the recipe,
the model checkpoint's SHA-256, sampler, NFE, the loss curve, timings and provenance.

Its key hashes everything that determines the logits: the model checkpoint's content hash, the
architecture, sampler, NFE and the recipe (`Recipe`: lam, lr, iterations, batch size, loss,
clamp, label dropout, init, seed) plus the kind of data. File name:
`<arch>-<sampler>-nfe<N>-lam<lam>-<key>.pt`, looked up in `<results_dir>/_routers/` first,
then among the toy routers shipped in the package.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict
from pathlib import Path

import torch

from .....system.files import atomic_path
from ..router import save_router
from .trainer import Recipe

STORE_DIR = "_routers"
SHIPPED_DIR = Path(__file__).resolve().parents[3] / "routers" / "learned"


def data_kind(spec: str | None) -> str:
    """What the key records about the data: `toy`, or `imagenet` for any path (paths move)."""
    return "toy" if spec == "toy" else "imagenet"


def router_name(*, arch: str, sampler: str, nfe: int, recipe: Recipe, model_sha256: str, data: str,
                interval: int = 2) -> str:
    identity = {"arch": arch, "sampler": sampler, "nfe": nfe, "recipe": asdict(recipe),
                "model_sha256": model_sha256, "data": data_kind(data)}
    if interval != 2:  # the paper's cycle is not in the key: routers stored for it keep their names
        identity["interval"] = interval
    key = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9]+", "", arch)
    cycle = "" if interval == 2 else f"-k{interval}"
    return f"{slug}-{sampler}-nfe{nfe}{cycle}-lam{recipe.lam:g}-{key}"


def store_path(results_dir: str | os.PathLike, name: str) -> Path:
    return Path(results_dir) / STORE_DIR / f"{name}.pt"


def find_router(results_dir: str | os.PathLike, name: str) -> Path | None:
    """The stored artifact for `name`: the results store first, then the shipped toy routers."""
    for path in (store_path(results_dir, name), SHIPPED_DIR / f"{name}.pt"):
        if path.is_file():
            return path
    return None


def save_artifact(path: Path, logits: torch.Tensor, metadata: dict) -> None:
    metadata = json.loads(json.dumps(metadata, default=str))  # plain types: loadable with weights_only
    save_router(logits, path, metadata)
    summary = {k: v for k, v in metadata.items() if k != "history"}
    with atomic_path(path.with_suffix(".json")) as tmp:  # human-readable twin (the .pt is the artifact)
        tmp.write_text(json.dumps(summary, indent=1, default=str))


def read_metadata(path: str | os.PathLike) -> dict:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return obj.get("l2c_bench", {}) if isinstance(obj, dict) else {}
