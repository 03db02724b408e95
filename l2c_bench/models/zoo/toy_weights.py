"""Trained toy weights of the wrapped diffusers classes (PixArt, SD3, Flux, FLUX.2, Wan, LTX): configurations.

The seeded toy configurations (TOY_CONFIGS) are latents without a VAE, so a run of them has no
image metrics, and their random weights make every cached output nearly the uncached one. These
configurations work in pixel space instead, on the procedural set (toy/data.py: 3 x 32 x 32, 10
classes): label i is class i through a 10-prompt seeded bank (row 10 the empty prompt, the null
label), so the toy classifier, image PSNR and the converged reference apply as for the toy DiT.
Wan (video) learns toy/video_data.py's clips of those classes (3 x 3 x 32 x 32, the pattern
moving): its rows score each frame against the converged reference video (metrics/video.py; no
image-set metrics), and Wan 2.2's two experts both load the one trained file (`load_trained`);
LTX-Video, a token per pixel, learns the same clips average-pooled to 3 x 3 x 8 x 8.
`python -m l2c_bench.toy.train_zoo` trains them (docs/diffusers.md gives the commands);
model.checkpoint=toy loads the shipped file, model.checkpoint=random keeps TOY_CONFIGS' seeded
random weights (speed studies).
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parents[2] / "toy" / "assets"

# width 64 (4 heads of 16) and 64 image tokens where the class allows (patch 4 on 32 x 32): small enough
# for ~2000 steps of batch 32 in 12 minutes on one shared CPU core
TRAINED_CONFIGS: dict[str, dict] = {
    # eps and learned-variance channels (6), DiT's linear schedule (ddim)
    "PixArtTransformer2DModel": dict(
        num_attention_heads=4, attention_head_dim=16, in_channels=3, out_channels=6, num_layers=4,
        cross_attention_dim=64, caption_channels=32, sample_size=32, patch_size=4, use_additional_conditions=False),
    "SD3Transformer2DModel": dict(
        sample_size=32, patch_size=4, in_channels=3, out_channels=3, num_layers=4, attention_head_dim=16,
        num_attention_heads=4, joint_attention_dim=32, caption_projection_dim=64, pooled_projection_dim=32,
        pos_embed_max_size=8),
    # Flux packs 2x2 pixel patches (in_channels 4 x 3): 256 tokens on 32 x 32, so fewer, narrower blocks
    "FluxTransformer2DModel": dict(
        patch_size=1, in_channels=12, num_layers=1, num_single_layers=2, attention_head_dim=16,
        num_attention_heads=4, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
        axes_dims_rope=[4, 6, 6]),
    # FLUX.2 packs as Flux (in_channels 4 x 3, 256 tokens) with 4-axis rope (t, h, w, l): image tokens vary
    # only in h and w, text tokens only in l, so those get most of the 16 dims
    "Flux2Transformer2DModel": dict(
        patch_size=1, in_channels=12, num_layers=1, num_single_layers=2, attention_head_dim=16,
        num_attention_heads=4, joint_attention_dim=32, timestep_guidance_channels=256, guidance_embeds=True,
        axes_dims_rope=[2, 6, 6, 2]),
    # video: 3 frames of 32 x 32 pixels (toy/video_data.py's clips), patch (1, 4, 4): 192 tokens
    "WanTransformer3DModel": dict(
        patch_size=[1, 4, 4], num_attention_heads=4, attention_head_dim=16, in_channels=3, out_channels=3,
        text_dim=32, freq_dim=64, ffn_dim=256, num_layers=4, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32),
    # LTX-Video takes a token per latent pixel (patch 1): 3 frames of 8 x 8 pixels (the clips 4x
    # average-pooled), 192 tokens
    "LTXVideoTransformer3DModel": dict(
        in_channels=3, out_channels=3, patch_size=1, patch_size_t=1, num_attention_heads=4, attention_head_dim=16,
        cross_attention_dim=64, num_layers=4, qk_norm="rms_norm_across_heads", caption_channels=32),
}
TRAINED_ARGS = {"prompts": 10, "prompt_tokens": 8, "sample_size": 32}  # label i = class i; Flux, FLUX.2 read sample_size

# per class, over TRAINED_ARGS (`trained_args`)
TRAINED_SETTINGS: dict[str, dict] = {"LTXVideoTransformer3DModel": {"sample_size": 8}}

# class -> its shipped file: only the classes whose weights are in toy/assets
SHIPPED: dict[str, str] = {"PixArtTransformer2DModel": "pixart_toy.pt", "SD3Transformer2DModel": "sd3_toy.pt",
                           "FluxTransformer2DModel": "flux_toy.pt", "Flux2Transformer2DModel": "flux2_toy.pt",
                           "WanTransformer3DModel": "wan_toy.pt", "LTXVideoTransformer3DModel": "ltx_toy.pt"}


def trained_args(cls: str) -> dict:
    """The model.zoo settings of `cls`'s trained configuration."""
    return {**TRAINED_ARGS, **TRAINED_SETTINGS.get(cls, {})}


def asset_path(cls: str) -> Path | None:
    """The shipped trained toy weights of `cls`, None where it has none."""
    return ASSETS / SHIPPED[cls] if cls in SHIPPED else None


def load_trained(model, path: Path):
    """`model` (built in its TRAINED_CONFIGS configuration) with the trained weights at `path`,
    strictly. Wan 2.2's two experts (model.zoo.boundary_ratio) both start from the one trained Wan
    file: at toy scale they are the same network, switched as the pipeline switches them (the
    switch still restarts every cache, engine.core.restarted)."""
    from ..checkpoint import check_state_dict, read_state_dict

    state = read_state_dict(path)
    if getattr(model, "transformer_2", None) is not None and not any(k.startswith("transformer_2.") for k in state):
        state.update({"transformer_2." + k.removeprefix("transformer."): v for k, v in list(state.items())
                      if k.startswith("transformer.")})
    check_state_dict(model, state, f"trained toy weights {path}")
    model.load_state_dict(state, strict=True)
    return model
