"""A transformer from a local diffusers folder, never downloaded.

diffusers' `from_pretrained` loads a class that keeps some modules in float32
(`_keep_in_fp32_modules`: Wan) only through `accelerate`'s low-memory path, and refuses without it.
Loaded in float32, as we load every transformer, those modules are float32 anyway; so without
`accelerate` the class is built from the folder's config and its safetensors are read strictly
(the keys diffusers itself ignores, `_keys_to_ignore_on_load_unexpected`, left out).
"""

from __future__ import annotations

import re
from pathlib import Path

from torch import nn


def load_transformer(cls: type, root: str | Path) -> nn.Module:
    """`cls.from_pretrained(root, local_files_only=True)`, or its weights read directly where
    diffusers needs `accelerate` for it and it is not installed."""
    from diffusers.utils import is_accelerate_available

    if is_accelerate_available() or not cls._keep_in_fp32_modules:
        return cls.from_pretrained(root, local_files_only=True)
    from safetensors.torch import load_file

    files = sorted(Path(root).glob("*.safetensors"))
    if not files:
        raise ValueError(f"{root}: no .safetensors weights; without `accelerate` (pip install accelerate) diffusers "
                         f"cannot load {cls.__name__} from other formats")
    model = cls.from_config(cls.load_config(root))
    state = {}
    for file in files:  # one file, or the shards of one (diffusion_pytorch_model-0000k-of-0000n)
        state.update(load_file(file))
    ignored = cls._keys_to_ignore_on_load_unexpected or []
    model.load_state_dict({k: v for k, v in state.items() if not any(re.search(p, k) for p in ignored)}, strict=True)
    return model.eval()
