"""diffusers transformers as model families of the engine (`model=diffusers`, docs/diffusers.md).

    model = build_zoo("PixArtTransformer2DModel")             # the toy configuration, random weights
    model = build_zoo("DiTTransformer2DModel", pretrained="/models/DiT-XL-2-256")  # local folder

Each wrapped class has one adapter module (dit, pixart, sd3, flux, flux2, wan, ltx); `ADAPTERS` maps diffusers'
class name to it, and `TOY_CONFIGS` holds the tiny configurations the tests and the toy sweep use
(a few blocks, small widths, as diffusers' own tests build them: CPU seconds, no download).
"""

from __future__ import annotations

import json
import os
from contextlib import nullcontext
from pathlib import Path

from .adapter import ZooArgs, ZooModel
from .dit import DiTAdapter, from_ours
from .flux import FluxAdapter
from .flux2 import Flux2Adapter
from .ltx import LTXAdapter
from .pixart import PixArtAdapter
from .pretrained import load_transformer
from .sd3 import SD3Adapter
from .wan import WanAdapter

ADAPTERS: dict[str, type[ZooModel]] = {a.diffusers_class: a for a in (DiTAdapter, PixArtAdapter, SD3Adapter, FluxAdapter,
                                                                      Flux2Adapter, WanAdapter, LTXAdapter)}

TOY_CONFIGS: dict[str, dict] = {
    "DiTTransformer2DModel": dict(
        num_attention_heads=4, attention_head_dim=32, in_channels=3, out_channels=6, num_layers=8,
        sample_size=32, patch_size=4, num_embeds_ada_norm=10, norm_eps=1e-6),
    "PixArtTransformer2DModel": dict(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8, num_layers=4,
        cross_attention_dim=32, caption_channels=32, sample_size=16, patch_size=2, use_additional_conditions=False),
    "SD3Transformer2DModel": dict(
        sample_size=16, patch_size=2, in_channels=4, out_channels=4, num_layers=4, attention_head_dim=8,
        num_attention_heads=4, joint_attention_dim=32, caption_projection_dim=32, pooled_projection_dim=64,
        pos_embed_max_size=32),
    "FluxTransformer2DModel": dict(
        patch_size=1, in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
        axes_dims_rope=[4, 4, 8]),
    # diffusers' own tiny FLUX.2 test configuration (4-axis rope, no pooled text), with 2 + 2 blocks as
    # Flux's toy (DeepCache needs a deep span) and 16 = 4 x 4 packed channels
    "Flux2Transformer2DModel": dict(
        patch_size=1, in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, timestep_guidance_channels=256, axes_dims_rope=[4, 4, 4, 4]),
    # diffusers' own tiny Wan test configuration with 4 blocks, not 2 (DeepCache needs a deep span, and the
    # other toy classes have 4); one forward on (1, 4, 3, 16, 16) latents: a few ms on a CPU
    "WanTransformer3DModel": dict(
        patch_size=[1, 2, 2], num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
        text_dim=16, freq_dim=256, ffn_dim=32, num_layers=4, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32),
    # diffusers' own tiny LTX-Video test configuration with 4 blocks, not 1 (as Wan's)
    "LTXVideoTransformer3DModel": dict(
        in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, num_layers=4, qk_norm="rms_norm_across_heads", caption_channels=16),
}
TOY_ARGS = {"prompts": 8, "prompt_tokens": 8, "sample_size": 16}  # text classes; Flux, FLUX.2 and Wan read sample_size
TOY_FRAMES = 3  # Wan's and LTX's latent frames at toy scale (Wan: a 9-frame video through its 4x temporal VAE)


class ZooConfigError(ValueError):
    """A `model.*` setting of the diffusers family that cannot work (raised before any compute)."""


def adapter_for(cls: str) -> type[ZooModel]:
    if cls not in ADAPTERS:
        raise ZooConfigError(f"model.class={cls!r} has no adapter; valid: {', '.join(ADAPTERS)}")
    return ADAPTERS[cls]


def zoo_args(cls: str, config: dict | None = None, **settings) -> ZooArgs:
    """The description of a wrapped model: `config` None = the class's toy configuration (use
    `{**TOY_CONFIGS[cls], **keys}` for keys over it)."""
    import inspect

    import diffusers

    adapter = adapter_for(cls)
    config = {k: v for k, v in (TOY_CONFIGS[cls] if config is None else config).items() if not k.startswith("_")}
    accepted = set(inspect.signature(getattr(diffusers, cls).__init__).parameters) - {"self"}
    unknown = sorted(set(config) - accepted)
    if unknown:  # diffusers' from_config would ignore them with a warning: a silent fallback
        raise ZooConfigError(f"model.config: {cls} has no parameter(s) {unknown}; valid: {sorted(accepted)}")
    if adapter is not DiTAdapter:
        settings = {**TOY_ARGS, **settings}
    if adapter.VIDEO:
        settings = {"frames": TOY_FRAMES, **settings}
    if not adapter.VIDEO and adapter not in (FluxAdapter, Flux2Adapter):  # the others' configs say their latent size
        settings.pop("sample_size", None)
    return ZooArgs(cls, json.dumps(config, sort_keys=True), **settings)


def build_zoo(cls: str, *, config: dict | None = None, pretrained: str | os.PathLike | None = None,
              device=None, **settings) -> ZooModel:
    """A wrapped diffusers transformer: random weights from `config` (default: the toy one), or
    the transformer of a local `from_pretrained` folder (never downloaded)."""
    import diffusers

    if pretrained is None:
        return build(zoo_args(cls, config, **settings), device)
    adapter = adapter_for(cls)
    root = _transformer_folder(pretrained)
    transformer = load_transformer(getattr(diffusers, cls), root)
    args = zoo_args(cls, {k: _plain(v) for k, v in transformer.config.items()},
                    **{**adapter.folder_settings(pretrained), **settings})
    return adapter(args, transformer, **adapter.pretrained_parts(pretrained, args))


def build(args: ZooArgs, device=None) -> ZooModel:
    """The wrapped model a description names, with fresh (on `meta`: no) weights."""
    import torch

    with torch.device(device) if device is not None else nullcontext():
        return adapter_for(args.cls)(args)


def _transformer_folder(pretrained: str | os.PathLike | None) -> Path:
    """The folder holding the transformer's config.json: `pretrained` or its `transformer/`."""
    if not pretrained:
        raise ZooConfigError("model.checkpoint=pretrained needs model.pretrained: a local diffusers folder "
                             "holding the transformer (from save_pretrained or a downloaded hub repo)")
    folder = Path(str(pretrained))
    for root in (folder / "transformer", folder):
        if (root / "config.json").is_file():
            return root
    raise ZooConfigError(f"model.pretrained={str(folder)!r}: no config.json there or in its transformer/ "
                         "folder; give a local diffusers folder (from save_pretrained or a downloaded hub repo)")


def pretrained_config(pretrained) -> dict:
    """A local folder's transformer config (JSON only: no weights are read)."""
    return {k: _plain(v) for k, v in json.loads((_transformer_folder(pretrained) / "config.json").read_text()).items()}


def _plain(value):
    """A config value as JSON holds it (tuples as lists)."""
    return list(value) if isinstance(value, tuple) else value


__all__ = ["ADAPTERS", "TOY_CONFIGS", "build", "pretrained_config", "ZooArgs", "ZooConfigError", "ZooModel", "build_zoo", "from_ours", "zoo_args"]
