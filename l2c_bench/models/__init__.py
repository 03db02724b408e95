"""Model registry: official names -> builders, plus strict checkpoint loading.

    model = build_model("DiT-XL/2", input_size=64)      # DiT-XL/2 for 512px
    load_checkpoint(model, "DiT-XL-2-512x512.pt")
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import fields, replace

import torch
from torch import nn

from .checkpoint import CheckpointError, load_checkpoint, read_state_dict, save_checkpoint
from .dit import DiT, DiTArgs
from .uvit import UViT, UViTArgs

_DIT_SIZES = {"S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16), "XL": (1152, 28, 16)}

# name -> (model class, default constructor args)
MODEL_SPECS: dict[str, tuple[type[nn.Module], object]] = {
    f"DiT-{size}/{patch}": (DiT, DiTArgs(patch_size=patch, hidden_size=h, depth=d, num_heads=nh))
    for size, (h, d, nh) in _DIT_SIZES.items()
    for patch in (2, 4, 8)
}
MODEL_SPECS.update({
    "U-ViT-H/2": (UViT, UViTArgs(img_size=32, patch_size=2)),
    "U-ViT-H/4": (UViT, UViTArgs(img_size=64, patch_size=4)),
    "U-ViT-L/2": (UViT, UViTArgs(img_size=32, patch_size=2, embed_dim=1024, depth=20, conv=True)),
    "U-ViT-L/4": (UViT, UViTArgs(img_size=64, patch_size=4, embed_dim=1024, depth=20, conv=True)),
    # Toy scale: the same architectures, small, on 3x32x32 pixels with 10 classes.
    "DiT-toy": (DiT, DiTArgs(input_size=32, patch_size=4, in_channels=3, hidden_size=128, depth=8,
                             num_heads=4, num_classes=10)),
    "U-ViT-toy": (UViT, UViTArgs(img_size=32, patch_size=4, in_chans=3, embed_dim=128, depth=8,
                                 num_heads=4, num_classes=10)),
})


def build_model(name: str, *, device: str | torch.device | None = None, **overrides) -> nn.Module:
    """Build a registered architecture; keyword overrides replace constructor arguments.

    `device="meta"` builds without allocating weights (layout and MAC studies).
    """
    if name not in MODEL_SPECS:
        raise KeyError(f"unknown model {name!r}; valid names: {', '.join(MODEL_SPECS)}")
    cls, defaults = MODEL_SPECS[name]
    valid = {f.name for f in fields(defaults)}
    bad = sorted(set(overrides) - valid)
    if bad:
        raise TypeError(f"{name} has no argument(s) {bad}; valid: {sorted(valid)}")
    args = replace(defaults, **overrides)
    with torch.device(device) if device is not None else nullcontext():
        model = cls(args)
    model.name = name
    return model


__all__ = [
    "MODEL_SPECS",
    "CheckpointError",
    "DiT",
    "DiTArgs",
    "UViT",
    "UViTArgs",
    "build_model",
    "load_checkpoint",
    "read_state_dict",
    "save_checkpoint",
]
