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
    TEXT_COMPONENTS = {"text_encoder": "CLIP-L (with projection)", "tokenizer": "its tokenizer",
                       "text_encoder_2": "CLIP-G (with projection)", "tokenizer_2": "its tokenizer"}
    OPTIONAL_TEXT_COMPONENTS = ("text_encoder_3", "tokenizer_3")  # T5: without it, zeros (as the pipeline)

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

    @staticmethod
    def encode_text(pipe, texts, tokens, device):
        """Both CLIPs' and T5's tokens (P + 1, 77 + tokens, D) and the CLIPs' pooled vectors."""
        embeddings, _, pooled, _ = pipe.encode_prompt(texts, None, None, device=device,
                                                      do_classifier_free_guidance=False, max_sequence_length=tokens)
        return embeddings, pooled, None

    def modulated(self, args, kwargs):
        """Block 0's modulated image input (AdaLayerNormZero's first output)."""
        return self.blocks[0].norm1(kwargs["hidden_states"], emb=kwargs["temb"])[0]
