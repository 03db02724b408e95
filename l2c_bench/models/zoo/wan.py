"""diffusers' `WanTransformer3DModel`: Wan 2.1 and Wan 2.2 text-to-video, rectified flow (our
`flow_euler` sampler), video latents (N, C, F, H, W).

Per block (`WanTransformerBlock`) the attention branch is the self-attention and the
cross-attention to the text (parts 0 and 1), the MLP branch the feed-forward `ffn`. The block
adds the self-attention and the MLP through gates and the cross-attention as is; it calls
`.float()` on the MLP's output, so a dropped branch is a zero tensor (`CONCATENATING`'s rule).
Labels are prompt indices (prompts.py): UMT5 token embeddings (L, text_dim), no pooled vector,
no attention mask (the pipeline zero-pads the tokens past each prompt).

Wan 2.2 (A14B) denoises with two experts of one architecture: `transformer` runs the high-noise
steps, `transformer_2` the rest, switched as diffusers' `WanPipeline` switches them: an
evaluation at timestep t >= boundary_ratio * 1000 (num_train_timesteps) runs `transformer`, and
the low-noise expert has its own guidance scale (`guidance_scale_2`, None: the run's). Plans
index blocks 0..L-1 of whichever expert runs, by the sampler's step (the engine's evaluation
index, never a per-expert call count), and restart where the expert changes
(`expert_switches`, engine.core.restarted): nothing one expert stored is read by the other.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ...engine.model import ATTENTION, MLP
from .adapter import ZooArgs, ZooModel
from .pretrained import load_transformer
from .prompts import PromptBank

NUM_TRAIN_TIMESTEPS = 1000  # the flow schedulers' (FlowMatchEuler's, WanPipeline's UniPC's) time scale


def flow_timesteps(sampler: str, nfe: int, shift: float) -> torch.Tensor:
    """(nfe,) the model times `flow_euler` evaluates at: diffusers' FlowMatchEuler schedule with a
    static shift, float32, as sampling/flow.py's FlowEulerSteps makes them (the models package does
    not import the samplers; tests/test_video_zoo.py checks the two agree)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    if sampler != "flow_euler":
        raise ValueError(f"Wan 2.2's expert switch is placed on flow_euler's timesteps, not {sampler}'s")
    scheduler = FlowMatchEulerDiscreteScheduler(shift=float(shift))
    scheduler.set_timesteps(nfe, device="cpu")
    return scheduler.timesteps.float()


def _architecture(config) -> dict:
    """A transformer config without diffusers' bookkeeping keys (`_name_or_path`, versions)."""
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


class WanAdapter(ZooModel):
    family = "flow"
    diffusers_class = "WanTransformer3DModel"
    BRANCHES = {"WanTransformerBlock": [("attn1", ATTENTION, 0, 1), ("attn2", ATTENTION, 1, 1), ("ffn", MLP, 0, 1)]}
    CONCATENATING = ("WanTransformerBlock",)  # `ff_output.float()`: a dropped MLP must be a tensor
    VIDEO = True
    TEXT_COMPONENTS = {"text_encoder": "the UMT5 encoder", "tokenizer": "its tokenizer"}

    def __init__(self, args: ZooArgs, transformer=None, transformer_2=None):
        import diffusers

        self._expert = 0  # the expert of the evaluation in progress (0: transformer, 1: transformer_2)
        super().__init__(args, transformer)  # our hooks on the first expert's blocks
        config = self.transformer.config
        if args.boundary_ratio is None:
            if transformer_2 is not None or args.guidance_2 is not None:
                raise ValueError("a second expert and model.zoo.guidance_2 need model.zoo.boundary_ratio (Wan 2.2)")
        else:
            if not 0.0 < args.boundary_ratio < 1.0:
                raise ValueError(f"model.zoo.boundary_ratio={args.boundary_ratio} must lie in (0, 1)")
            if transformer_2 is None:  # toy and random weights: the same configuration, the next seeded draw
                transformer_2 = diffusers.WanTransformer3DModel.from_config(args.config_dict)
            if _architecture(transformer_2.config) != _architecture(config):
                raise ValueError("Wan 2.2's experts must share one configuration (plans index the same blocks)")
        self.transformer_2 = transformer_2
        if transformer_2 is not None:
            self._install_hooks(list(transformer_2.blocks))  # block i of either expert is the plans' block i
        self.boundary = None if args.boundary_ratio is None else args.boundary_ratio * NUM_TRAIN_TIMESTEPS
        self.guidance_scale_2 = args.guidance_2  # read by the sampler's GuidedDenoiser
        self.in_channels = self.guidance_channels = config.in_channels
        if args.frames < 1 or args.sample_size < 1:
            raise ValueError(f"Wan needs latent frames and a latent side (model.zoo.frames, model.zoo.sample_size), "
                             f"got {args.frames} and {args.sample_size}")
        patch = config.patch_size  # (t, h, w)
        width = args.sample_width or args.sample_size
        self.latent_shape = (config.in_channels, args.frames, args.sample_size, width)  # one sample (C, F, H, W)
        if any(side % p for side, p in zip(self.latent_shape[1:], patch, strict=True)):
            raise ValueError(f"Wan's latents {self.latent_shape[1:]} (frames, height, width) must divide by its "
                             f"patch {tuple(patch)}: set model.zoo.frames, model.zoo.sample_size (and "
                             "model.zoo.sample_width) to multiples of it")
        self.input_size = args.sample_size
        self.num_classes = self.null_class = args.prompts
        self.flow_shift = args.flow_shift
        self.bank = PromptBank(args.prompts, args.prompt_tokens, config.text_dim, seed=args.prompt_seed)

    # -- the experts ---------------------------------------------------------------------------
    @property
    def experts(self):
        second = getattr(self, "transformer_2", None)  # set after the base class has hooked the first
        return (self.transformer,) if second is None else (self.transformer, second)

    @property
    def blocks(self):
        """The running expert's blocks (a span runs them; Wan 2.1: the one transformer's)."""
        return list(self.experts[self._expert].blocks)

    @property
    def block_paths(self):
        """The first expert's: MACs are measured on a weightless copy, whose evaluations run the
        first expert (`expert_at`); the experts share one configuration, so they cost the same."""
        return [f"transformer.blocks.{i}" for i in range(len(self.transformer.blocks))]

    def expert_at(self, t: torch.Tensor) -> int:
        """The expert an evaluation at model time t (N,) runs: diffusers' rule, t >= boundary runs
        `transformer` (0), else `transformer_2` (1); one host read (the pipeline's own `t >=`). A
        weightless copy (`meta`, MACs) runs the first."""
        if self.transformer_2 is None or t.device.type == "meta":
            return 0
        return 0 if bool(t.reshape(-1)[0] >= self.boundary) else 1

    def expert_switches(self, sampler: str, nfe: int) -> tuple[int, ...]:
        """The evaluations where the other expert takes over: from the sampler's own timesteps."""
        if self.transformer_2 is None:
            return ()
        experts = [self.expert_at(t) for t in flow_timesteps(sampler, nfe, self.flow_shift)]
        return tuple(n for n in range(1, nfe) if experts[n] != experts[n - 1])

    def expert_guidance(self, scale: float) -> float:
        """The guidance scale of the evaluation just run: the low-noise expert's own, where set."""
        return scale if self._expert == 0 or self.guidance_scale_2 is None else self.guidance_scale_2

    # -- one evaluation ------------------------------------------------------------------------
    def call(self, x, t, y):
        """x (N, C, F, H, W) latents, t (N,) in [0, 1000], y (N,) prompt indices."""
        self._expert = self.expert_at(t)
        text, _ = self.bank(y)
        return self.experts[self._expert](x, timestep=t, encoder_hidden_states=text).sample

    def modulated(self, args, kwargs):
        """Block 0's modulated input, norm1(h) * (1 + scale_msa) + shift_msa (the block's own
        numerics: float32 norm, the block's table plus the timestep projection (N, 6, D))."""
        block, h = self.blocks[0], self.state_of(args, kwargs)
        temb = args[2] if len(args) > 2 else kwargs["temb"]
        shift, scale = (block.scale_shift_table + temb.float()).chunk(6, dim=1)[:2]
        return (block.norm1(h.float()) * (1 + scale) + shift).type_as(h)

    # -- a pretrained folder -------------------------------------------------------------------
    @classmethod
    def pretrained_parts(cls, folder, args: ZooArgs) -> dict:
        """Wan 2.2: the low-noise expert from the folder's transformer_2/ (never downloaded)."""
        if args.boundary_ratio is None:
            return {}
        import diffusers

        root = Path(str(folder)) / "transformer_2"
        if not (root / "config.json").is_file():
            raise ValueError(f"model.pretrained={str(folder)!r}: Wan 2.2 (model.zoo.boundary_ratio="
                             f"{args.boundary_ratio}) needs its low-noise expert in transformer_2/; none there")
        return {"transformer_2": load_transformer(diffusers.WanTransformer3DModel, root)}

    @classmethod
    def folder_settings(cls, folder) -> dict:
        """A Wan 2.2 pipeline folder (transformer_2/ and a boundary_ratio in model_index.json): its
        boundary_ratio."""
        folder = Path(str(folder))
        index = folder / "model_index.json"
        if not index.is_file() or not (folder / "transformer_2").is_dir():
            return {}
        ratio = json.loads(index.read_text()).get("boundary_ratio")
        return {} if ratio is None else {"boundary_ratio": float(ratio)}

    @staticmethod
    def encode_text(pipe, texts, tokens, device):
        """UMT5 token embeddings (P + 1, tokens, D), zero past each prompt (the pipeline's padding);
        no pooled vector, no mask."""
        embeddings, _ = pipe.encode_prompt(texts, do_classifier_free_guidance=False, max_sequence_length=tokens,
                                           device=device)
        return embeddings, None, None
