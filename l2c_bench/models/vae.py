"""The SD kl-f8 VAE (diffusers `AutoencoderKL`), loadable from diffusers or U-ViT/LDM key names.

DiT decodes with `stabilityai/sd-vae-ft-ema|mse` (diffusers names); U-ViT ships
`autoencoder_kl_ema.pth` with CompVis/LDM names. Both are the same architecture, so one
module serves both and `ldm_to_diffusers_key` converts names. Latents are scaled by 0.18215.
"""

from __future__ import annotations

import os
import re

import torch
from torch import nn

from .checkpoint import check_state_dict, read_state_dict

LATENT_SCALE = 0.18215

# config.json of stabilityai/sd-vae-ft-ema (and -mse); no hub access needed.
SD_VAE_CONFIG = dict(
    act_fn="silu",
    block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4,
    in_channels=3,
    latent_channels=4,
    layers_per_block=2,
    norm_num_groups=32,
    out_channels=3,
    sample_size=256,
    up_block_types=["UpDecoderBlock2D"] * 4,
)

VAE_SOURCES = {
    "ema": "stabilityai/sd-vae-ft-ema (diffusion_pytorch_model.bin / .safetensors), used by DiT",
    "mse": "stabilityai/sd-vae-ft-mse (diffusion_pytorch_model.bin / .safetensors), used by DiT",
    "uvit": "assets/stable-diffusion/autoencoder_kl_ema.pth from the U-ViT README's Drive folder",
}

_NUM_LEVELS = len(SD_VAE_CONFIG["block_out_channels"])
_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_LEGACY_ATTN = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def build_vae(device: str | torch.device | None = None) -> nn.Module:
    from diffusers import AutoencoderKL  # heavy import, only when a VAE is used

    with torch.device(device) if device is not None else torch.device("cpu"):
        return AutoencoderKL(**SD_VAE_CONFIG).eval()


def ldm_to_diffusers_key(key: str) -> str:
    """Map one CompVis/LDM autoencoder key to its diffusers name."""
    rules = [
        (r"^encoder\.down\.(\d+)\.block\.(\d+)\.", lambda m: f"encoder.down_blocks.{m[1]}.resnets.{m[2]}."),
        (r"^encoder\.down\.(\d+)\.downsample\.", lambda m: f"encoder.down_blocks.{m[1]}.downsamplers.0."),
        (r"^decoder\.up\.(\d+)\.block\.(\d+)\.",
         lambda m: f"decoder.up_blocks.{_NUM_LEVELS - 1 - int(m[1])}.resnets.{m[2]}."),
        (r"^decoder\.up\.(\d+)\.upsample\.",
         lambda m: f"decoder.up_blocks.{_NUM_LEVELS - 1 - int(m[1])}.upsamplers.0."),
        (r"^(encoder|decoder)\.mid\.block_(\d+)\.", lambda m: f"{m[1]}.mid_block.resnets.{int(m[2]) - 1}."),
        (r"^(encoder|decoder)\.mid\.attn_1\.(norm|q|k|v|proj_out)\.",
         lambda m: f"{m[1]}.mid_block.attentions.0.{_ATTN[m[2]]}."),
        (r"^(encoder|decoder)\.norm_out\.", lambda m: f"{m[1]}.conv_norm_out."),
    ]
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key.replace(".nin_shortcut.", ".conv_shortcut.")


def to_diffusers_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Accept LDM, legacy-diffusers or diffusers names; return diffusers names and shapes."""
    out = {}
    for key, value in state.items():
        key = ldm_to_diffusers_key(key)
        key = re.sub(r"attentions\.0\.(query|key|value|proj_attn)\.",
                     lambda m: f"attentions.0.{_LEGACY_ATTN[m[1]]}.", key)
        if re.search(r"attentions\.0\.(to_q|to_k|to_v|to_out\.0)\.weight$", key) and value.ndim == 4:
            value = value[:, :, 0, 0]  # LDM 1x1 conv [512, 512, 1, 1] -> linear [512, 512]
        out[key] = value
    return out


def load_vae(path: str | os.PathLike, *, config_key: str = "model.vae_checkpoint",
             device: str | torch.device | None = None) -> nn.Module:
    """Build the SD VAE and load `path` strictly (any of the three naming schemes)."""
    state = read_state_dict(path, config_key=config_key,
                            source=" or ".join(VAE_SOURCES.values()))
    state = to_diffusers_state_dict(state)
    vae = build_vae()
    check_state_dict(vae, state, f"VAE checkpoint {path} (config key `{config_key}`)")
    vae.load_state_dict(state, strict=True)
    return vae.to(device) if device is not None else vae


@torch.no_grad()
def decode_latents(vae: nn.Module, latents: torch.Tensor, chunk: int = 50) -> torch.Tensor:
    """(N, C, h, w) latents -> (N, 3, 8h, 8w) images in about [-1, 1], decoded in chunks. A
    diffusers VAE's own `scaling_factor` and `shift_factor` (SD3, Flux) undo the latent scaling;
    the SD VAE's is 0.18215. Wan's video VAE (`AutoencoderKLWan`): (N, C, f, h, w) latents, its
    per-channel `latents_mean` and `latents_std` undone as its pipeline does (z * std + mean), ->
    (N, 3, F, 8h, 8w) videos (F = 4(f - 1) + 1)."""
    config = getattr(vae, "config", None)
    mean = getattr(config, "latents_mean", None)
    if mean is not None:  # per-channel statistics (Wan): broadcast over frames and pixels
        view = (1, -1) + (1,) * (latents.ndim - 2)
        mean = torch.tensor(mean, dtype=latents.dtype, device=latents.device).view(view)
        std = torch.tensor(config.latents_std, dtype=latents.dtype, device=latents.device).view(view)
        return torch.cat([vae.decode(z * std + mean).sample for z in latents.split(chunk)])
    scale = getattr(config, "scaling_factor", None) or LATENT_SCALE
    shift = getattr(config, "shift_factor", None)
    if shift is None:  # the SD VAE (no shift_factor): z / scale, no extra addition
        return torch.cat([vae.decode(z / scale).sample for z in latents.split(chunk)])
    return torch.cat([vae.decode(z / scale + shift).sample for z in latents.split(chunk)])


@torch.no_grad()
def encode_images(vae: nn.Module, images: torch.Tensor, generator: torch.Generator | None = None):
    """(N, 3, H, W) images in [-1, 1] -> sampled latents (N, 4, H/8, W/8) times 0.18215."""
    dist = vae.encode(images).latent_dist
    return dist.sample(generator=generator) * LATENT_SCALE
