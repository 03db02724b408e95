"""diffusers' `LTXVideoTransformer3DModel` (LTX-Video): text-to-video, rectified flow (our
`flow_euler` sampler), video latents (N, C, F, H, W).

Why this video family after Wan: its blocks are one stream, as Wan's (self-attention `attn1`,
cross-attention `attn2` to the text, feed-forward `ff`), so every method of the engine applies
unchanged; TeaCache ships a calibration for it (TeaCache4LTX-Video), and diffusers' tiny test
configuration runs in milliseconds on a CPU. HunyuanVideo (dual + single stream, as Flux) and
CogVideoX (text and video tokens concatenated through every block) need more state plumbing.

Per block (`LTXVideoTransformerBlock`) the attention branch is `attn1` and `attn2` (parts 0 and
1), the MLP branch `ff`; the block adds `attn1` and `ff` through gates and `attn2` as is (a
dropped branch is the scalar 0). The transformer takes the latents packed as tokens
(N, F*H*W, C) (`LTXPipeline._pack_latents` with patch 1 x 1 x 1, the toy's and LTX-Video's
transformer patch: its VAE does the 32x spatial compression), the timestep in [0, 1000] as the
pipeline passes it, and the rotary interpolation scale the pipeline derives from the VAE's
compression and the frame rate (`rope_interpolation_scale`: (8 / 25, 32, 32) at 25 fps).
"""

from __future__ import annotations

from ...engine.model import ATTENTION, MLP
from .adapter import ZooArgs, ZooModel
from .prompts import PromptBank

# LTXPipeline's: VAE temporal compression 8 over 25 frames per second, spatial compression 32
ROPE_INTERPOLATION_SCALE = (8 / 25, 32, 32)


class LTXAdapter(ZooModel):
    family = "flow"
    diffusers_class = "LTXVideoTransformer3DModel"
    BRANCHES = {"LTXVideoTransformerBlock": [("attn1", ATTENTION, 0, 1), ("attn2", ATTENTION, 1, 1), ("ff", MLP, 0, 1)]}
    TEXT_COMPONENTS = {"text_encoder": "the T5 encoder", "tokenizer": "its tokenizer"}
    VIDEO = True

    def __init__(self, args: ZooArgs, transformer=None):
        super().__init__(args, transformer)
        config = self.transformer.config
        if config.patch_size != 1 or config.patch_size_t != 1:
            raise ValueError("LTXAdapter packs latents token per latent pixel: it needs patch_size 1 and patch_size_t 1")
        if args.frames < 1 or args.sample_size < 1:
            raise ValueError(f"LTX-Video needs latent frames and a latent side (model.zoo.frames, model.zoo.sample_size), "
                             f"got {args.frames} and {args.sample_size}")
        self.in_channels = self.guidance_channels = config.in_channels
        width = args.sample_width or args.sample_size
        self.latent_shape = (config.in_channels, args.frames, args.sample_size, width)  # one sample (C, F, H, W)
        self.input_size = args.sample_size
        self.num_classes = self.null_class = args.prompts
        self.flow_shift = args.flow_shift
        self.bank = PromptBank(args.prompts, args.prompt_tokens, config.caption_channels, seed=args.prompt_seed)

    def call(self, x, t, y):
        """x (N, C, F, H, W) latents, t (N,) in [0, 1000], y (N,) prompt indices."""
        n, c, f, h, w = x.shape
        text, _ = self.bank(y)
        tokens = x.flatten(2).transpose(1, 2)  # (N, F*H*W, C): LTXPipeline._pack_latents at patch 1
        out = self.transformer(tokens, encoder_hidden_states=text, timestep=t, encoder_attention_mask=self.bank.mask_of(y),
                               num_frames=f, height=h, width=w,
                               rope_interpolation_scale=ROPE_INTERPOLATION_SCALE).sample
        return out.transpose(1, 2).reshape(n, c, f, h, w)

    @staticmethod
    def encode_text(pipe, texts, tokens, device):
        """T5 token embeddings (P + 1, tokens, D) and their padding mask; no pooled vector."""
        embeddings, mask, _, _ = pipe.encode_prompt(texts, do_classifier_free_guidance=False, device=device,
                                                    max_sequence_length=tokens)
        return embeddings, None, mask

    def modulated(self, args, kwargs):
        """Block 0's modulated input, norm1(h) * (1 + scale_msa) + shift_msa (its table plus temb)."""
        block, h = self.blocks[0], self.state_of(args, kwargs)
        temb = args[2] if len(args) > 2 else kwargs["temb"]  # (N, 1, 6D)
        table = block.scale_shift_table[None, None] + temb.reshape(len(h), temb.size(1), 6, -1)
        shift, scale = table[:, :, 0], table[:, :, 1]
        return block.norm1(h) * (1 + scale) + shift
