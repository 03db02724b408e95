"""L2C router files: the official format (`{"routers": {"<i>.prob": (2*blocks,)}}` or the bare
dict of `<i>.prob` tensors) is also ours, with an optional `l2c_bench` metadata dict."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import torch

from ....engine.core import CacheConfigError
from ....system.files import atomic_path


def load_router(path: str | os.PathLike, config_key: str = "cache.router") -> torch.Tensor:
    """Router logits (num_steps, 2*blocks), float32; row i is the official vector `i.prob`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"router not found: {path} (set by config key `{config_key}`)")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):  # official DiT files hold args
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise CacheConfigError(f"cannot read router {path} (`{config_key}`): {type(exc).__name__}") from None
    routers = obj.get("routers", obj) if isinstance(obj, dict) else None
    if not isinstance(routers, dict):
        raise CacheConfigError(f"router {path} (`{config_key}`) holds no `routers` dict of `<i>.prob` tensors")
    vectors = {}
    for key, value in routers.items():
        match = re.fullmatch(r"(\d+)\.prob", key)
        if match and isinstance(value, torch.Tensor):
            vectors[int(match[1])] = value.detach().float().reshape(-1)
    if not vectors or sorted(vectors) != list(range(len(vectors))):
        raise CacheConfigError(f"router {path} (`{config_key}`) must hold vectors 0.prob .. N-1.prob")
    return torch.stack([vectors[i] for i in range(len(vectors))])


def save_router(logits: torch.Tensor, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write logits (num_steps, 2*blocks) in the official layout (atomically)."""
    path = Path(path)
    payload = {"routers": {f"{i}.prob": row.detach().float().clone() for i, row in enumerate(logits)}}
    if metadata:
        payload["l2c_bench"] = metadata
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
