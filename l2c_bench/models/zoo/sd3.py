"""diffusers' `SD3Transformer2DModel` (MMDiT): rectified flow (our `flow_euler` sampler), an image
and a text stream per block.

Per block the attention branch is the joint attention (its image and text outputs, parts 0 and
1; SD3.5's second image attention is part 2) and the MLP branch the image and text feed-forwards
(parts 0 and 1; the last block has no text MLP). A span of blocks carries both streams, text
tokens first. Labels are prompt indices (prompts.py).
"""

from __future__ import annotations

from ...engine.model import ATTENTION, MLP
from .adapter import ZooArgs, ZooModel
from .prompts import PromptBank


class SD3Adapter(ZooModel):
    family = "flow"
    diffusers_class = "SD3Transformer2DModel"
    BRANCHES = {"JointTransformerBlock": [("attn", ATTENTION, 0, 2), ("attn2", ATTENTION, 2, 1),
                                          ("ff", MLP, 0, 1), ("ff_context", MLP, 1, 1)]}
    dual_stream = True

    def __init__(self, args: ZooArgs, transformer=None):
        super().__init__(args, transformer)
        config = self.transformer.config
        self.in_channels = self.guidance_channels = config.in_channels
        self.input_size = config.sample_size
        self.num_classes = self.null_class = args.prompts
        self.flow_shift = args.flow_shift
        self.bank = PromptBank(args.prompts, args.prompt_tokens, config.joint_attention_dim,
                               config.pooled_projection_dim, seed=args.prompt_seed)

    def call(self, x, t, y):
        text, pooled = self.bank(y)
        return self.transformer(x, encoder_hidden_states=text, pooled_projections=pooled, timestep=t).sample

    def modulated(self, args, kwargs):
        """Block 0's modulated image input (AdaLayerNormZero's first output)."""
        return self.blocks[0].norm1(kwargs["hidden_states"], emb=kwargs["temb"])[0]
