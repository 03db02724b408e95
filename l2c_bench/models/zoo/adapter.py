"""A diffusers transformer as a `CacheableModel` (engine/model.py): the adapter every family shares.

A family's adapter says where its branches are (`BRANCHES`: per block type, which modules make
the attention and the MLP branch), how its blocks pass their state on (single-stream blocks
take and return `hidden_states`; dual-stream ones take `hidden_states` and
`encoder_hidden_states` and return both), and how one of our evaluations calls the transformer
(`call`). Hooks (hooks.py) do the rest, so the transformer's own code runs unchanged.

`ZooArgs` is the whole description of the model: the diffusers class, its config and, for the
text-conditioned classes, the prompt bank (prompts.py). It is hashable, so MACs are counted once
per description on a weightless copy (metrics/macs.py), as for our own models.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ...engine.model import unknown_probe
from .hooks import BLOCK_HOOK, BRANCH_HOOK, BlockHook, BranchHook, register


@dataclass(frozen=True)
class ZooArgs:
    """What builds a wrapped model. `config` is the diffusers config as JSON (sorted keys)."""

    cls: str
    config: str
    prompts: int = 0  # text-conditioned classes: the prompt bank's prompts (labels 0..prompts-1)
    prompt_tokens: int = 8  # tokens per prompt embedding
    prompt_seed: int = 0  # seeds the toy bank's random embeddings
    text_tokens: int = 0  # a pretrained folder's text encoders: max_sequence_length (0: its pipeline's default)
    flow_shift: float = 3.0  # rectified-flow classes: the sampler's timestep shift
    guidance: float = 3.5  # guidance-distilled classes (Flux): the guidance the model embeds
    sample_size: int = 0  # the latent side (height) where the config has none (Flux, Wan); 0 elsewhere
    official: bool = False  # DiT: the official DiT's timestep frequencies (dit.py)
    # video classes (Wan, wan.py): latent frames, and the latent width where it is not sample_size
    frames: int = 0
    sample_width: int = 0
    # Wan 2.2: two experts switched at boundary_ratio * 1000 (None: one transformer, Wan 2.1), and
    # the low-noise expert's guidance scale (None: the run's model.guidance_scale for both)
    boundary_ratio: float | None = None
    guidance_2: float | None = None

    @property
    def config_dict(self) -> dict:
        return json.loads(self.config)


class ZooModel(nn.Module):
    """Base of the adapters. Subclasses set `family`, `diffusers_class`, `BRANCHES` and `call`."""

    family: ClassVar[str]
    diffusers_class: ClassVar[str]
    # block class name -> [(module attribute, branch, first part, outputs)]; a missing (None)
    # attribute is skipped (SD3's last block has no text-stream MLP)
    BRANCHES: ClassVar[dict[str, list[tuple[str, int, int, int]]]]
    # architecture facts (engine/model.py): diffusers' transformers run their blocks in sequence,
    # one residual stream without long skips or an encoder/decoder split; SD3's and Flux's joint
    # blocks carry a text and an image stream (`dual_stream`: a span's state holds both)
    long_skips: ClassVar[bool] = False
    mid_block_index: ClassVar[int | None] = None
    dual_stream: ClassVar[bool] = False
    # block classes whose branch outputs the block concatenates: a dropped branch is a zero tensor
    CONCATENATING: ClassVar[tuple[str, ...]] = ()
    # text-conditioned classes: the pipeline folder's text components ({subfolder: what goes there})
    TEXT_COMPONENTS: ClassVar[dict[str, str]] = {}
    OPTIONAL_TEXT_COMPONENTS: ClassVar[tuple[str, ...]] = ()
    guidance_channels: int
    prompt_set = None  # the PromptSet it is conditioned on (prompt_sets.py), if any: label i is prompt i
    VIDEO = False  # samples are videos (N, C, F, H, W): Wan, LTX-Video

    def __init__(self, args: ZooArgs, transformer: nn.Module | None = None):
        super().__init__()
        import diffusers

        self.args = args
        if transformer is None:
            transformer = getattr(diffusers, args.cls).from_config(args.config_dict)
        if type(transformer).__name__ != self.diffusers_class:
            raise TypeError(f"{type(self).__name__} wraps {self.diffusers_class}, got {type(transformer).__name__}")
        self.transformer = transformer
        self.runner = None  # the engine's runner for the evaluation in progress (None: compute all)
        self.peer = None  # diffusers' own cache hooks now applied to the transformer (a hooked plan's)
        self.inside_span = False
        self.blocks_in = None  # block 0's (args, kwargs) this evaluation, for the run-time probes
        self._install_hooks()

    @classmethod
    def pretrained_parts(cls, folder, args: ZooArgs) -> dict:
        """Further modules a pretrained folder holds for this class (Wan 2.2's second expert), as
        constructor arguments; none by default."""
        return {}

    @classmethod
    def folder_settings(cls, folder) -> dict:
        """Settings a pretrained pipeline folder fixes (Wan 2.2's boundary_ratio from its
        model_index.json), under model.zoo's; none by default."""
        return {}

    @property
    def experts(self) -> tuple[nn.Module, ...]:
        """The transformers this model samples with: one (Wan 2.2: two, wan.py)."""
        return (self.transformer,)

    def use_prompts(self, prompts, bank=None) -> None:
        """Condition on a prompt set (a PromptSet: its texts are what CLIP score reads, its images a
        reference set) and, from a pretrained folder's text encoders, their encodings (text.py) in
        place of the seeded bank."""
        if len(prompts) != self.args.prompts:
            raise ValueError(f"{len(prompts)} prompts for a model built with prompts={self.args.prompts}")
        if bank is not None:
            if bank.embeddings.shape[1:] != self.bank.embeddings.shape[1:]:
                raise ValueError(f"encoded prompts of shape {tuple(bank.embeddings.shape[1:])}, the model was "
                                 f"built for {tuple(self.bank.embeddings.shape[1:])}")
            self.bank = bank.to(self.bank.embeddings.device)
        self.prompt_set = prompts

    @property
    def prompt_texts(self) -> tuple[str, ...] | None:
        """The prompt set's texts (label i is prompt i), or None without one."""
        return None if self.prompt_set is None else self.prompt_set.texts

    # -- the blocks and their branches -------------------------------------------------------
    @property
    def blocks(self) -> list[nn.Module]:
        """The transformer blocks in execution order (plans index them 0..num_blocks-1)."""
        return list(self.transformer.transformer_blocks)

    @property
    def block_paths(self) -> list[str]:
        return [f"transformer.transformer_blocks.{i}" for i in range(len(self.transformer.transformer_blocks))]

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def branch_modules(self, index: int) -> list[tuple[str, int, int, int]]:
        """[(module attribute, branch, first part, outputs)] of block `index` that exist."""
        block = self.blocks[index]
        spec = self.BRANCHES.get(type(block).__name__)
        if spec is None:
            raise TypeError(f"{type(self).__name__} knows no branches of {type(block).__name__}")
        return [entry for entry in spec if getattr(block, entry[0], None) is not None]

    def branch_paths(self) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
        """Per block, the module paths (from this model) of its attention and its MLP branch:
        what MACs counts per branch."""
        out = []
        for index, prefix in enumerate(self.block_paths):
            paths = ([], [])
            for attr, branch, _, _ in self.branch_modules(index):
                paths[branch].append(f"{prefix}.{attr}")
            out.append((tuple(paths[0]), tuple(paths[1])))
        return out

    def _install_hooks(self, blocks: list[nn.Module] | None = None) -> None:
        """Our hooks on `blocks` (default: `self.blocks`), block i of them as the plans' block i."""
        for index, block in enumerate(self.blocks if blocks is None else blocks):
            register(block, BlockHook(self, index), BLOCK_HOOK)
            zeros = type(block).__name__ in self.CONCATENATING
            for attr, branch, part, outputs in self.branch_modules(index):
                register(getattr(block, attr), BranchHook(self, index, branch, part, outputs, zeros), BRANCH_HOOK)

    # -- one evaluation ----------------------------------------------------------------------
    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, runner=None) -> torch.Tensor:
        """x (N, C, H, W) (video: (N, C, F, H, W)), t (N,) in the family's time convention, y (N,)
        labels or prompt indices."""
        self.runner, self.blocks_in = runner, None
        hooks = getattr(runner, "hooks", None)
        try:
            if hooks is None:
                if self.peer is not None:  # a plain or engine-cached evaluation after a hooked run
                    for expert in self.experts:
                        self.peer.remove(expert)
                    self.peer = None
                return self.call(x, t, y)
            if runner.evaluation == 0 and runner.pass_index == 0:  # a new batch: fresh hooks, empty state
                for expert in self.experts:  # each expert its own hooks and state (Wan 2.2: two)
                    if self.peer is not None:
                        self.peer.remove(expert)
                    hooks.apply(expert)
                self.peer = hooks
            with ExitStack() as stack:  # the sampler's evaluation index, whichever expert runs it
                for expert in self.experts:
                    stack.enter_context(hooks.context(expert, runner.pass_index, runner.evaluation, runner.nfe, t))
                return self.call(x, t, y)
        finally:
            self.runner, self.blocks_in = None, None

    def call(self, x, t, y) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    # -- how blocks pass their state on (single stream; dual stream overrides) ----------------
    def state_of(self, args: tuple, kwargs: dict) -> torch.Tensor:
        """A block's input as one tensor (N, T, D): hidden_states, or for dual-stream blocks the
        text tokens then the image tokens (N, L + T, D)."""
        if self.dual_stream:
            return torch.cat([kwargs["encoder_hidden_states"], kwargs["hidden_states"]], dim=1)
        return args[0] if args else kwargs["hidden_states"]

    def with_state(self, args: tuple, kwargs: dict, h: torch.Tensor) -> tuple[tuple, dict]:
        if self.dual_stream:
            text = kwargs["encoder_hidden_states"].shape[1]
            return args, {**kwargs, "encoder_hidden_states": h[:, :text], "hidden_states": h[:, text:]}
        return ((h, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": h})

    def next_inputs(self, args: tuple, kwargs: dict, out) -> tuple[tuple, dict]:
        """The next block's inputs from this block's output."""
        if self.dual_stream:
            text, hidden = out
            if text is None:  # a last block that drops the text stream (SD3): it is not read again
                text = kwargs["encoder_hidden_states"]
            return args, {**kwargs, "encoder_hidden_states": text, "hidden_states": hidden}
        return self.with_state(args, kwargs, out)

    def block_output(self, args: tuple, kwargs: dict, h: torch.Tensor):
        """What a block returns, from the state (N, T, D) a span computed or reused."""
        if self.dual_stream:
            text = kwargs["encoder_hidden_states"].shape[1]
            return h[:, :text], h[:, text:]
        return h

    def passthrough(self, args: tuple, kwargs: dict):
        """What a block inside a span returns when the span's first block already stood for it."""
        return self.block_output(args, kwargs, self.state_of(args, kwargs))

    # -- run-time probes (engine/model.py) ------------------------------------------------------
    def probe(self, kind: str, span_in: torch.Tensor) -> torch.Tensor:
        blocks_in = self.state_of(*self.blocks_in)
        if kind == "residual":  # on the image tokens (a dual-stream state starts with the text's)
            text = self.blocks_in[1]["encoder_hidden_states"].shape[1] if self.dual_stream else 0
            return span_in[:, text:] - blocks_in[:, text:]
        if kind == "modulated":
            return self.modulated(*self.blocks_in)
        raise unknown_probe(kind)

    def modulated(self, args: tuple, kwargs: dict) -> torch.Tensor:
        """Block 0's timestep-modulated input; an adapter without a cheap way to it: its input."""
        return self.state_of(args, kwargs)


