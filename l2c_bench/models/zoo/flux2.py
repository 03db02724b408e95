"""diffusers' `Flux2Transformer2DModel` (FLUX.2): rectified flow (our `flow_euler` sampler),
double-stream blocks then single-stream blocks, guidance-distilled, as Flux 1 (flux.py) with
these differences, each of which the adapter follows:

- Latents are packed as Flux 1's (2x2 patches, channel order (C, 2, 2): the pipeline's
  `_patchify_latents` then `_pack_latents`), with 4-axis position ids (t, h, w, l): image tokens
  (0, row, col, 0), text tokens (0, 0, 0, i), as `Flux2Pipeline._prepare_latent_ids/_text_ids`.
- Text is one sequence of Mistral hidden states (N, L, joint_attention_dim): no pooled vector.
  At toy scale it is the seeded prompt bank's (prompts.py) with the config's joint_attention_dim.
- The modulation is computed once per evaluation from the timestep (shared by all blocks:
  `temb_mod_img`, `temb_mod_txt` for the double-stream ones, `temb_mod` for the single-stream).
- A single-stream block is a "parallel" block: `attn` (Flux2ParallelSelfAttention) computes the
  attention and the SwiGLU MLP from one fused input projection and sums them through one fused
  output projection, so they cannot be told apart from outside. The whole `attn` is the block's
  attention branch; a single-stream block has no separate MLP branch (MLP-only reuse leaves it
  computed, and its MLP's MACs count as attention MACs).
- The transformer concatenates the streams itself between the two kinds of blocks
  (cat([text, image]) (N, L + T, D)), and single-stream blocks take `hidden_states` as that one
  tensor with `encoder_hidden_states=None` and return one tensor. A span's state is (N, L + T, D)
  in both kinds; a span that crosses from the last double-stream block into the single-stream
  ones calls a single-stream block with the double-stream keywords, which a pre-hook on those
  blocks turns into the transformer's own (`_single_inputs`).
"""

from __future__ import annotations

import torch

from ...engine.model import ATTENTION, MLP
from .adapter import ZooArgs, ZooModel
from .flux import DoubleThenSingleBlocks, pack, unpack
from .prompts import PromptBank


class Flux2Adapter(DoubleThenSingleBlocks, ZooModel):
    family = "flow"
    diffusers_class = "Flux2Transformer2DModel"
    BRANCHES = {
        "Flux2TransformerBlock": [("attn", ATTENTION, 0, 2), ("ff", MLP, 0, 1), ("ff_context", MLP, 1, 1)],
        "Flux2SingleTransformerBlock": [("attn", ATTENTION, 0, 1)],  # attention and MLP fused (above)
    }
    dual_stream = True
    TEXT_COMPONENTS = {"text_encoder": "the Mistral Small 3.1 encoder", "tokenizer": "its processor"}

    def __init__(self, args: ZooArgs, transformer=None):
        super().__init__(args, transformer)
        config = self.transformer.config
        if config.patch_size != 1 or config.in_channels % 4:
            raise ValueError("Flux2Adapter packs 2x2 latent patches: it needs patch_size 1 and in_channels = 4 x C")
        if len(config.axes_dims_rope) != 4:
            raise ValueError(f"Flux2Adapter gives 4-axis position ids (t, h, w, l); axes_dims_rope="
                             f"{list(config.axes_dims_rope)}")
        if config.num_layers < 1:
            raise ValueError("Flux2Adapter needs a double-stream block (the probes read block 0's streams)")
        self.in_channels = self.guidance_channels = config.in_channels // 4
        if args.sample_size < 2 or args.sample_size % 2:
            raise ValueError(f"FLUX.2 needs the latent side (model.sample_size), even, got {args.sample_size}")
        self.input_size = args.sample_size  # the config has no image size: the latent side is ours
        self.num_classes = self.null_class = args.prompts
        self.flow_shift = args.flow_shift
        self.bank = PromptBank(args.prompts, args.prompt_tokens, config.joint_attention_dim, seed=args.prompt_seed)
        # the single-stream modulation of the evaluation in progress (N, 3D), for a crossing span
        self._single_mod = None
        self.transformer.single_stream_modulation.register_forward_hook(self._record_single_mod)
        for j, block in enumerate(self.transformer.single_transformer_blocks):
            block.register_forward_pre_hook(self._single_inputs, with_kwargs=True)
            block.attn.register_forward_hook(self._mlp_ran(config.num_layers + j))

    def call(self, x, t, y):
        """x (N, C, H, W) latents, t (N,) in [0, 1000], y (N,) prompt indices."""
        n, _, h, w = x.shape
        text, _ = self.bank(y)  # (N, L, joint_attention_dim)
        rows = torch.arange(h // 2, device=x.device).repeat_interleave(w // 2)
        cols = torch.arange(w // 2, device=x.device).repeat(h // 2)
        zeros = torch.zeros_like(rows)
        img_ids = torch.stack([zeros, rows, cols, zeros], dim=1)  # (HW/4, 4): (t, h, w, l)
        positions = torch.arange(text.shape[1], device=x.device)
        txt_ids = torch.stack([torch.zeros_like(positions)] * 3 + [positions], dim=1)  # (L, 4)
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full((n,), self.args.guidance, device=x.device, dtype=x.dtype)
        out = self.transformer(pack(x), encoder_hidden_states=text, timestep=t / 1000, img_ids=img_ids,
                               txt_ids=txt_ids, guidance=guidance).sample
        return unpack(out, h, w)

    @staticmethod
    def encode_text(pipe, texts, tokens, device):
        """Mistral's stacked hidden states (P + 1, tokens, joint_attention_dim); no pooled vector."""
        embeddings, _ = pipe.encode_prompt(texts, device=device, max_sequence_length=tokens)
        return embeddings, None, None

    def _mlp_ran(self, index: int):
        """A hooked plan (diffusers' or cache-dit's hooks decide) records the branches that ran; a
        single-stream block's MLP runs inside its fused `attn`, so it ran when our hook inside that did
        (a peer hook that skipped the module (PAB) leaves both unset). (A plan of
        ours cannot run one without the other there: its MLP decision on a single-stream block is
        not executed, and costs and saves 0 MACs.)"""
        def hook(module, args, out):
            ran = getattr(self.runner, "ran", None)  # the engine's _ObservingRunner's row (blocks, 2)
            if ran is not None:
                ran[index, MLP] = ran[index, ATTENTION]  # set by our hook inside this call, if it ran
        return hook

    # -- the two kinds of blocks' state -------------------------------------------------------
    def _record_single_mod(self, module, args, out):
        self._single_mod = out

    def _single_inputs(self, module, args, kwargs):
        """A single-stream block called with a double-stream block's keywords (inside a span that
        crosses the boundary): the keywords the transformer itself gives it."""
        if "temb_mod_img" not in kwargs:
            return None
        h = torch.cat([kwargs["encoder_hidden_states"], kwargs["hidden_states"]], dim=1)
        return args, {"hidden_states": h, "encoder_hidden_states": None, "temb_mod": self._single_mod,
                      "image_rotary_emb": kwargs.get("image_rotary_emb"),
                      "joint_attention_kwargs": kwargs.get("joint_attention_kwargs")}

    def state_of(self, args, kwargs):
        """(N, L + T, D): text then image tokens (a single-stream block's input already is)."""
        if kwargs.get("encoder_hidden_states") is None:
            return kwargs["hidden_states"]
        return torch.cat([kwargs["encoder_hidden_states"], kwargs["hidden_states"]], dim=1)

    def with_state(self, args, kwargs, h):
        if kwargs.get("encoder_hidden_states") is None:
            return args, {**kwargs, "hidden_states": h}
        text = kwargs["encoder_hidden_states"].shape[1]
        return args, {**kwargs, "encoder_hidden_states": h[:, :text], "hidden_states": h[:, text:]}

    def next_inputs(self, args, kwargs, out):
        if isinstance(out, tuple):  # a double-stream block: (text, image)
            return args, {**kwargs, "encoder_hidden_states": out[0], "hidden_states": out[1]}
        if "temb_mod_img" in kwargs:  # the first single-stream block of a crossing span ran
            kwargs = self._single_inputs(None, args, kwargs)[1]
        return args, {**kwargs, "hidden_states": out}

    def block_output(self, args, kwargs, h):
        if kwargs.get("encoder_hidden_states") is None:
            return h
        text = kwargs["encoder_hidden_states"].shape[1]
        return h[:, :text], h[:, text:]

    def modulated(self, args, kwargs):
        """Block 0's modulated image input, (1 + scale_msa) * norm1(h) + shift_msa (its own code)."""
        from diffusers.models.transformers.transformer_flux2 import Flux2Modulation

        (shift, scale, _), _ = Flux2Modulation.split(kwargs["temb_mod_img"], 2)
        return (1 + scale) * self.blocks[0].norm1(kwargs["hidden_states"]) + shift
