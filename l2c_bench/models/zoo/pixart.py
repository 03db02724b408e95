"""diffusers' `PixArtTransformer2DModel` (PixArt-alpha): DiT's conventions (eps and learned
variance on the linear 1000-step schedule, so our DDIM runs it), text by cross-attention.

Per block the attention branch is the self-attention and the cross-attention (parts 0 and 1),
the MLP branch the feed-forward; classifier-free guidance runs both halves as one batch on every
eps channel, as PixArt's pipeline does. Labels are prompt indices (prompts.py).
"""

from __future__ import annotations

from ...engine.model import ATTENTION, MLP
from .adapter import ZooArgs, ZooModel
from .prompts import PromptBank


class PixArtAdapter(ZooModel):
    family = "dit"
    diffusers_class = "PixArtTransformer2DModel"
    BRANCHES = {"BasicTransformerBlock": [("attn1", ATTENTION, 0, 1), ("attn2", ATTENTION, 1, 1), ("ff", MLP, 0, 1)]}
    TEXT_COMPONENTS = {"text_encoder": "the T5 encoder", "tokenizer": "its tokenizer"}

    def __init__(self, args: ZooArgs, transformer=None):
        super().__init__(args, transformer)
        config = self.transformer.config
        self.in_channels = config.in_channels
        self.guidance_channels = config.in_channels  # every eps channel (the variance is not guided)
        self.input_size = config.sample_size
        self.num_classes = self.null_class = args.prompts
        self.bank = PromptBank(args.prompts, args.prompt_tokens, config.caption_channels, seed=args.prompt_seed)

    def call(self, x, t, y):
        text, _ = self.bank(y)
        return self.transformer(x, encoder_hidden_states=text, timestep=t, encoder_attention_mask=self.bank.mask_of(y),
                                added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample

    @staticmethod
    def encode_text(pipe, texts, tokens, device):
        """T5 token embeddings (P + 1, tokens, D) and their padding mask; no pooled vector."""
        embeddings, mask, _, _ = pipe.encode_prompt(texts, do_classifier_free_guidance=False, device=device,
                                                    clean_caption=False, max_sequence_length=tokens)
        return embeddings, None, mask

    def modulated(self, args, kwargs):
        """Block 0's modulated input, norm1(h) * (1 + scale_msa) + shift_msa (adaLN-single)."""
        block, h = self.blocks[0], self.state_of(args, kwargs)
        table = block.scale_shift_table[None] + kwargs["timestep"].reshape(len(h), 6, -1)  # (N, 6, D)
        shift, scale = table[:, 0:1], table[:, 1:2]
        return block.norm1(h) * (1 + scale) + shift
