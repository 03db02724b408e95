"""Strict, safe checkpoint loading with errors that say what is wrong and where to look."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..system.files import atomic_path

# Where each official file is published (facts from the official READMEs).
OFFICIAL_SOURCES = {
    "DiT-XL/2@32": "DiT-XL-2-256x256.pt from https://dl.fbaipublicfiles.com/DiT/models/DiT-XL-2-256x256.pt",
    "DiT-XL/2@64": "DiT-XL-2-512x512.pt from https://dl.fbaipublicfiles.com/DiT/models/DiT-XL-2-512x512.pt",
    "U-ViT-H/2": "imagenet256_uvit_huge.pth from the U-ViT README (github.com/baofff/U-ViT, 'Pretrained Models')",
    "U-ViT-H/4": "imagenet512_uvit_huge.pth from the U-ViT README (github.com/baofff/U-ViT, 'Pretrained Models')",
    "U-ViT-L/2": "imagenet256_uvit_large.pth from the U-ViT README (github.com/baofff/U-ViT, 'Pretrained Models')",
    "U-ViT-L/4": "imagenet512_uvit_large.pth from the U-ViT README (github.com/baofff/U-ViT, 'Pretrained Models')",
}

_SHOW = 5  # keys listed per category in a mismatch report


class CheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be used with this model."""


def official_source(model: nn.Module) -> str:
    name = getattr(model, "name", "")
    if name.endswith("-toy"):
        return ("a toy asset shipped with the package; retrain it with "
                "`python -m l2c_bench.toy.train --model dit|uvit`")
    return OFFICIAL_SOURCES.get(f"{name}@{getattr(model, 'input_size', '')}") or OFFICIAL_SOURCES.get(
        name, "not officially released: use a checkpoint written by the model's training code"
    )


def read_state_dict(path: str | os.PathLike, *, config_key: str = "model.checkpoint",
                    source: str | None = None) -> dict[str, torch.Tensor]:
    """Load a state dict with `weights_only=True`, unwrapping `{"ema"|"model": ...}` wrappers.

    A missing file raises FileNotFoundError naming the file, the config key and `source`;
    an unreadable file raises CheckpointError instead of a pickle traceback.
    """
    path = Path(path)
    if not path.is_file():
        where = f" Where it comes from: {source}." if source else ""
        raise FileNotFoundError(
            f"checkpoint not found: {path} (set by config key `{config_key}`).{where}"
        )
    try:
        # DiT training checkpoints carry an argparse.Namespace of their arguments.
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure inside torch.load means an unusable file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"cannot read checkpoint {path} (config key `{config_key}`): the file is truncated, "
            f"corrupt or not a weights-only torch file ({type(exc).__name__}: {reason[:200]})"
        ) from None
    for wrapper in ("ema", "model", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"checkpoint {path} (config key `{config_key}`) holds no state dict: expected a mapping "
            "of tensors or a {'ema'|'model': state_dict} wrapper"
        )
    return dict(obj)


def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:_SHOW]) + (", ..." if len(items) > _SHOW else "")
    return f"{len(items)} {title}: {shown}"


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], origin: str) -> None:
    """Raise one CheckpointError listing missing, unexpected and wrongly shaped keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong_shape:
        parts = [
            _listing(title, items)
            for title, items in (("missing", missing), ("unexpected", unexpected),
                                 ("wrong shape (file != model)", wrong_shape))
            if items
        ]
        name = getattr(model, "name", type(model).__name__)
        raise CheckpointError(f"{origin} does not fit {name}: " + "; ".join(parts))


def load_checkpoint(model: nn.Module, path: str | os.PathLike, *,
                    config_key: str = "model.checkpoint") -> nn.Module:
    """Load `path` into `model` strictly and return the model.

    A model built on the `meta` device (no memory, no initialisation) receives the file's
    tensors directly, cast to the model's dtypes: the fast way to load a large checkpoint.
    """
    state = read_state_dict(path, config_key=config_key, source=official_source(model))
    check_state_dict(model, state, f"checkpoint {path} (config key `{config_key}`)")
    expected = model.state_dict()
    if any(t.device.type == "meta" for t in expected.values()):
        state = {k: v.to(expected[k].dtype) for k, v in state.items()}
        model.load_state_dict(state, strict=True, assign=True)
    else:
        model.load_state_dict(state, strict=True)
    return model


def save_checkpoint(model: nn.Module, path: str | os.PathLike, *, half: bool = False) -> None:
    """Write a plain state dict in the official layout (fp16 storage when `half`), atomically."""
    path = Path(path)
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().clone()
             for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
