"""What the engine needs from a model family: the interface DiT, U-ViT and the diffusers adapters
(`models/zoo`) implement. `generate` also reads null_class and the latent shape (`latent_shape`); `family`
names the sampler convention the adapters share (dit, uvit, flow: docs/caching.md), and what a
method needs to know about the architecture is a fact the model declares (below), never read
from the family's name.

A cacheable model has
- `family` (str): its sampler convention (noise schedule, time and guidance convention; the
  family's default sampler is `sampling.DEFAULT_SAMPLERS[family]`), and the key of methods
  defined per sampler (L2C's cache steps differ between DiT+DDIM and U-ViT+DPM-Solver-2);
- `num_blocks` (int): its transformer blocks, in execution order; plans index them 0..num_blocks-1;
- `num_classes` (int): class labels 0..num_classes-1 (the null class for guidance is num_classes);
- `forward(x, t, y, runner=None)`: x (N, C, H, W) (a video model: (N, C, F, H, W)), original
  timesteps t (N,), labels y (N,);
- the shape of one sample's latents: `latent_shape` (C, H, W) or (C, F, H, W) where the model
  declares it, else (in_channels, input_size, input_size) (`latent_shape(model)` reads it);
- `branch_paths()`: per block, the module paths of its attention and its MLP branch (MACs count
  each branch's work there);
and declares its architecture facts (class attributes or properties; `ARCHITECTURE_FACTS`):
- `long_skips` (bool): later blocks also read skips that earlier blocks saved (U-ViT's
  out-blocks pop the in-blocks' outputs), so the blocks are not one residual stream: a span's
  effect depends on more than its input (delta_dit refuses it), a reused deep span is reused as
  its output feature rather than its residual update (deepcache), and the last block, which
  reads block 0's skip, runs whenever block 0 does (fbcache's span ends before it);
- `mid_block_index` (int | None): the index of the block between an encoder (the blocks before
  it) and a decoder (the blocks after it), as U-ViT's mid block; None: no encoder/decoder split
  (faster_diffusion reuses the encoder and the mid block);
- `dual_stream` (bool): each block carries a text and an image stream (SD3's and Flux's
  joint blocks): a span's state is both, text tokens first, and the "residual" probe reads the
  image tokens.
A model whose weights change during sampling (Wan 2.2's high- and low-noise experts) also has
`expert_switches(sampler, nfe)`: the evaluations where another set of weights takes over; a
checked plan restarts its caches there (engine.core.restarted).

Inside `forward`, block b evaluates each residual branch -- ATTENTION (0), then MLP (1) -- as
`run_branch(runner, b, branch, fn, *args)`, where `fn(*args)` returns the branch output before
any gate (gates, shifts, scales and skip projections always run). When `runner.span` is a
(start, end) pair, blocks [start, end) run as one unit through
`runner.run_span(h, fn, probe=probe)`: `fn(h) -> (h_out, extras)`, and `probe(kind)` returns,
for a run-time policy, one of `PROBES` (N, T, D):
- "residual": the span's input minus the blocks' input (block 0's residual for a span from 1; on the
  image tokens of a dual-stream model);
- "modulated": block 0's timestep-modulated input (a model without adaLN: the blocks' input).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch

ATTENTION, MLP = 0, 1  # the branch index of a plan's compute[n][block][branch]
PROBES = ("residual", "modulated")
ARCHITECTURE_FACTS = ("long_skips", "mid_block_index", "dual_stream")  # what every model declares (above)


class BranchRunner(Protocol):
    """What a block calls to evaluate one residual branch (attention or MLP).

    The caching engine implements it to decide per (block, branch) whether to run
    `fn(*args)` or hand back a stored tensor. `None` in its place means "always compute".
    """

    def __call__(self, block_index: int, branch: int, fn: Callable, *args, part: int = 0) -> torch.Tensor: ...


@runtime_checkable
class CacheableModel(Protocol):
    """The model side of the engine (this module's docstring says what each member means)."""

    family: str
    num_classes: int
    long_skips: bool
    dual_stream: bool

    @property
    def num_blocks(self) -> int: ...

    @property
    def mid_block_index(self) -> int | None: ...

    def branch_paths(self) -> list[tuple[tuple[str, ...], tuple[str, ...]]]: ...

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                runner: BranchRunner | None = None) -> torch.Tensor: ...


def latent_shape(model) -> tuple[int, ...]:
    """One sample's latent shape: the model's `latent_shape` ((C, F, H, W) for video), else the
    image models' (in_channels, input_size, input_size)."""
    shape = getattr(model, "latent_shape", None)
    return tuple(shape) if shape is not None else (model.in_channels, model.input_size, model.input_size)


def run_branch(runner: BranchRunner | None, block_index: int, branch: int, fn: Callable, *args, part: int = 0):
    """Evaluate a branch directly, or through the runner when one is installed. `part` numbers the
    modules of a branch that has several (a cross-attention after the self-attention): the plan
    decides for the branch, and each part keeps its own stored output."""
    if runner is None:
        return fn(*args)
    if part == 0:
        return runner(block_index, branch, fn, *args)
    return runner(block_index, branch, fn, *args, part=part)


def store_key(block_index: int, branch: int, part: int = 0) -> tuple[int, ...]:
    """Where a runner keeps a branch's output: (block, branch), or (block, branch, part) for the
    further modules of a branch made of several."""
    return (block_index, branch) if part == 0 else (block_index, branch, part)


def reads_input(runner: BranchRunner | None, block_index: int, branch: int) -> bool:
    """Whether the branch's output this evaluation depends on its input: False when the runner
    hands back a stored, forecast or dropped output (`reads_input(block, branch)` on the runner;
    a runner without that method is assumed to compute)."""
    ask = getattr(runner, "reads_input", None)
    return True if ask is None else bool(ask(block_index, branch))


def unknown_probe(kind: str) -> ValueError:
    return ValueError(f"unknown probe {kind!r}; valid: {', '.join(PROBES)}")
