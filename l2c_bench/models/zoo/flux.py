"""diffusers' `FluxTransformer2DModel`: rectified flow (our `flow_euler` sampler), double-stream
blocks then single-stream blocks, guidance-distilled.

Our sampler works on latents (N, C, H, W); Flux takes them packed as 2x2 patches (N, HW/4, 4C)
with a position id per token, so `call` packs and unpacks. Blocks in execution order are the
double-stream ones then the single-stream ones. Double-stream: attention = the joint attention
(image and text outputs, parts 0 and 1), MLP = the image and text feed-forwards (parts 0, 1).
Single-stream: attention = its attention, MLP = `proj_mlp` (before the activation; the shared
output projection `proj_out` always runs). Guidance-distilled Flux embeds `ZooArgs.guidance` and
runs one pass per evaluation (sampler guidance off, w = 1); w != 1 adds true CFG (two halves).
"""

from __future__ import annotations

import torch

from ...engine.model import ATTENTION, MLP
from .adapter import ZooArgs, ZooModel
from .prompts import PromptBank


def pack(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, H/2 * W/2, 4C), each token one 2x2 patch (Flux's layout)."""
    n, c, h, w = x.shape
    return x.view(n, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(n, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    n, _, d = tokens.shape
    c = d // 4
    return tokens.view(n, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h, w)


class DoubleThenSingleBlocks:
    """The block order of Flux-like transformers: the dual-stream `transformer_blocks`, then the
    single-stream `single_transformer_blocks` (Flux, FLUX.2)."""

    @property
    def blocks(self):
        return [*self.transformer.transformer_blocks, *self.transformer.single_transformer_blocks]

    @property
    def block_paths(self):
        t = self.transformer
        return ([f"transformer.transformer_blocks.{i}" for i in range(len(t.transformer_blocks))]
                + [f"transformer.single_transformer_blocks.{i}" for i in range(len(t.single_transformer_blocks))])


class FluxAdapter(DoubleThenSingleBlocks, ZooModel):
    family = "flow"
    diffusers_class = "FluxTransformer2DModel"
    BRANCHES = {
        "FluxTransformerBlock": [("attn", ATTENTION, 0, 2), ("ff", MLP, 0, 1), ("ff_context", MLP, 1, 1)],
        "FluxSingleTransformerBlock": [("attn", ATTENTION, 0, 1), ("proj_mlp", MLP, 0, 1)],
    }
    dual_stream = True
    CONCATENATING = ("FluxSingleTransformerBlock",)  # cat([attention, mlp]) before proj_out
    TEXT_COMPONENTS = {"text_encoder": "CLIP-L", "tokenizer": "its tokenizer",
                       "text_encoder_2": "the T5 encoder", "tokenizer_2": "its tokenizer"}

    def __init__(self, args: ZooArgs, transformer=None):
        super().__init__(args, transformer)
        config = self.transformer.config
        if config.patch_size != 1 or config.in_channels % 4:
            raise ValueError("FluxAdapter packs 2x2 latent patches: it needs patch_size 1 and in_channels = 4 x C")
        self.in_channels = self.guidance_channels = config.in_channels // 4
        if args.sample_size < 2 or args.sample_size % 2:
            raise ValueError(f"Flux needs the latent side (model.sample_size), even, got {args.sample_size}")
        self.input_size = args.sample_size  # Flux's config has no image size: the latent side is ours
        self.num_classes = self.null_class = args.prompts
        self.flow_shift = args.flow_shift
        self.bank = PromptBank(args.prompts, args.prompt_tokens, config.joint_attention_dim,
                               config.pooled_projection_dim, seed=args.prompt_seed)

    def call(self, x, t, y):
        n, _, h, w = x.shape
        text, pooled = self.bank(y)
        rows = torch.arange(h // 2, device=x.device).repeat_interleave(w // 2)
        cols = torch.arange(w // 2, device=x.device).repeat(h // 2)
        img_ids = torch.stack([torch.zeros_like(rows), rows, cols], dim=1).to(x.dtype)  # (HW/4, 3)
        txt_ids = torch.zeros(text.shape[1], 3, device=x.device, dtype=x.dtype)
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full((n,), self.args.guidance, device=x.device, dtype=x.dtype)
        out = self.transformer(pack(x), encoder_hidden_states=text, pooled_projections=pooled,
                               timestep=t / 1000, img_ids=img_ids, txt_ids=txt_ids, guidance=guidance).sample
        return unpack(out, h, w)

    @staticmethod
    def encode_text(pipe, texts, tokens, device):
        """T5's tokens (P + 1, tokens, D) and CLIP's pooled vector."""
        embeddings, pooled, _ = pipe.encode_prompt(texts, None, device=device, max_sequence_length=tokens)
        return embeddings, pooled, None

    def modulated(self, args, kwargs):
        """Block 0's modulated image input (AdaLayerNormZero's first output)."""
        return self.blocks[0].norm1(kwargs["hidden_states"], emb=kwargs["temb"])[0]

