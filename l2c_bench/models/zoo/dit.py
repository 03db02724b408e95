"""diffusers' `DiTTransformer2DModel`: DiT's conventions (DDIM on the linear schedule, CFG on the
first 3 eps channels of a batch of both halves), attention and MLP per block.

`from_ours` copies one of our DiT's weights into diffusers' layout, so a trained toy DiT runs
through diffusers too. diffusers' DiT differs from the official one in two numerics: its timestep
sinusoid divides the log-frequencies by half-1 where DiT divides by half
(`Timesteps(downscale_freq_shift=1)`), and it recomputes the sin-cos position table where DiT
reads the one its checkpoint stores. `official=True` sets the shift to 0 on every block's embedder
and loads the checkpoint's table, which makes the two agree (docs/diffusers.md measures both).
"""

from __future__ import annotations

import json

import torch

from ...engine.model import ATTENTION, MLP
from .adapter import ZooArgs, ZooModel


class DiTAdapter(ZooModel):
    family = "dit"
    diffusers_class = "DiTTransformer2DModel"
    BRANCHES = {"BasicTransformerBlock": [("attn1", ATTENTION, 0, 1), ("ff", MLP, 0, 1)]}
    guidance_channels = 3

    def __init__(self, args: ZooArgs, transformer=None):
        super().__init__(args, transformer)
        if args.official:  # the position table comes with the weights (from_ours)
            for block in self.blocks:
                block.norm1.emb.time_proj.downscale_freq_shift = 0
        config = self.transformer.config
        self.in_channels = config.in_channels
        self.input_size = config.sample_size
        self.num_classes = config.num_embeds_ada_norm
        self.null_class = self.num_classes  # the label table's extra row (class dropout > 0)

    def call(self, x, t, y):
        return self.transformer(x, timestep=t, class_labels=y).sample

    def modulated(self, args, kwargs):
        """Block 0's adaLN-modulated input, norm1(h) * (1 + scale_msa) + shift_msa (TeaCache's)."""
        block, h = self.blocks[0], self.state_of(args, kwargs)
        return block.norm1(h, kwargs["timestep"], kwargs["class_labels"], hidden_dtype=h.dtype)[0]



def diffusers_pos_table(patch_embed) -> torch.Tensor:
    """The sin-cos position table diffusers' PatchEmbed computes for itself (1, T, D)."""
    from diffusers.models.embeddings import get_2d_sincos_pos_embed

    grid = patch_embed.height
    table = get_2d_sincos_pos_embed(patch_embed.pos_embed.shape[-1], grid, base_size=patch_embed.base_size,
                                    interpolation_scale=patch_embed.interpolation_scale, output_type="pt")
    return table.float().unsqueeze(0)


def dit_config(ours) -> dict:
    """diffusers' DiT config for one of our DiTs (models/dit.py)."""
    a = ours.args
    return {
        "num_attention_heads": a.num_heads, "attention_head_dim": a.hidden_size // a.num_heads,
        "in_channels": a.in_channels, "out_channels": ours.out_channels, "num_layers": a.depth,
        "sample_size": a.input_size, "patch_size": a.patch_size, "num_embeds_ada_norm": a.num_classes,
        "norm_eps": 1e-6,  # DiT's LayerNorms (diffusers' default is 1e-5)
        "activation_fn": "gelu-approximate", "attention_bias": True, "norm_type": "ada_norm_zero",
        "norm_elementwise_affine": False,
    }


def from_ours(ours, official: bool = False) -> DiTAdapter:
    """A diffusers DiT holding `ours`' weights (every tensor copied; the layouts differ). With
    `official`, DiT's own numerics: its timestep frequencies and the checkpoint's position table."""
    args = ZooArgs("DiTTransformer2DModel", json.dumps(dit_config(ours), sort_keys=True), official=official)
    with torch.device("meta"):
        model = DiTAdapter(args)
    model.transformer.to_empty(device=next(ours.parameters()).device)
    model.transformer.load_state_dict(convert_state_dict(ours.state_dict(), ours.args.depth), strict=True)
    table = model.transformer.pos_embed  # a buffer diffusers computes; to_empty left it unset
    with torch.no_grad():
        if official:
            table.pos_embed.copy_(ours.pos_embed)
        else:
            table.pos_embed.copy_(diffusers_pos_table(table))
    return model.to(next(ours.parameters()).device).eval().requires_grad_(False)


def convert_state_dict(sd: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """Our (official) DiT keys -> DiTTransformer2DModel keys. diffusers keeps a copy of the
    timestep and label embedders in every block's adaLN (`norm1.emb`)."""
    out = {
        "pos_embed.proj.weight": sd["x_embedder.proj.weight"], "pos_embed.proj.bias": sd["x_embedder.proj.bias"],
        "proj_out_1.weight": sd["final_layer.adaLN_modulation.1.weight"],
        "proj_out_1.bias": sd["final_layer.adaLN_modulation.1.bias"],
        "proj_out_2.weight": sd["final_layer.linear.weight"], "proj_out_2.bias": sd["final_layer.linear.bias"],
    }
    for b in range(depth):
        src, dst = f"blocks.{b}.", f"transformer_blocks.{b}."
        emb = dst + "norm1.emb."
        for i, j in (("0", "1"), ("2", "2")):
            out[f"{emb}timestep_embedder.linear_{j}.weight"] = sd[f"t_embedder.mlp.{i}.weight"]
            out[f"{emb}timestep_embedder.linear_{j}.bias"] = sd[f"t_embedder.mlp.{i}.bias"]
        out[emb + "class_embedder.embedding_table.weight"] = sd["y_embedder.embedding_table.weight"]
        out[dst + "norm1.linear.weight"] = sd[src + "adaLN_modulation.1.weight"]
        out[dst + "norm1.linear.bias"] = sd[src + "adaLN_modulation.1.bias"]
        for name, part in zip(("to_q", "to_k", "to_v"), sd[src + "attn.qkv.weight"].chunk(3), strict=True):
            out[f"{dst}attn1.{name}.weight"] = part
        for name, part in zip(("to_q", "to_k", "to_v"), sd[src + "attn.qkv.bias"].chunk(3), strict=True):
            out[f"{dst}attn1.{name}.bias"] = part
        out[dst + "attn1.to_out.0.weight"] = sd[src + "attn.proj.weight"]
        out[dst + "attn1.to_out.0.bias"] = sd[src + "attn.proj.bias"]
        out[dst + "ff.net.0.proj.weight"] = sd[src + "mlp.fc1.weight"]
        out[dst + "ff.net.0.proj.bias"] = sd[src + "mlp.fc1.bias"]
        out[dst + "ff.net.2.weight"] = sd[src + "mlp.fc2.weight"]
        out[dst + "ff.net.2.bias"] = sd[src + "mlp.fc2.bias"]
    return out
