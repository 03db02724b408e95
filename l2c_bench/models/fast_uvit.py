"""U-ViT's fast block runner: the blocks of `uvit.py`, run where our Triton kernels run (CUDA, no
autograd; `fused.ready`), with the skip concatenations as buffers and the residual adds in fewer
passes. `UViT` picks it or its plain `_run_blocks` by that one switch (`fused.switched(False)`
turns both the kernels and this runner off); the two give the same samples bit for bit
(tests/test_fused.py: on CUDA, and on the CPU in Triton's interpreter). What it saves:
docs/speed.md ("The models' fast paths").

- Each in-block writes its output's cast (autocast's dtype) straight into the right half of a
  concatenation buffer (N, T, 2D), pushed as its skip; the block before each out-block writes its
  output into the left half of the next buffer, so the out-block's `skip_linear` reads the buffer
  as it is: no concatenation pass (`buffered`, whole forwards only; a span that block-level
  caching reuses whole keeps plain skips).
- A block whose MLP output is reused does both residual adds in one pass; a run of in-blocks with
  every branch reused is one pass for all of them (`fused.residual_chain`).
"""

from __future__ import annotations

import torch

from ..engine.model import ATTENTION, MLP, BranchRunner, reads_input, run_branch
from .fast import concat_for_linear
from .fused import residual_add, residual_chain


def block_forward(block, x: torch.Tensor, skip=None, runner: BranchRunner | None = None, index: int = 0,
                  into: torch.Tensor | None = None, copy_to: torch.Tensor | None = None) -> torch.Tensor:
    """`UViTBlock.forward`, with `skip` (N, T, D) or its concatenation buffer (N, T, 2D) whose left
    half the block before wrote x into; `into` / `copy_to`: where the output goes / a copy of it
    goes (`fused.residual_add`)."""
    if block.skip_linear is not None:
        if skip.shape[-1] == 2 * x.shape[-1]:  # a buffer: skip in the right half, x in the left
            if x.data_ptr() != skip.data_ptr():  # x is not already there (a caller's own x)
                skip[..., : x.shape[-1]].copy_(x)
            x = block.skip_linear(skip)  # (N, T, 2D) -> (N, T, D)
        else:
            x = block.skip_linear(concat_for_linear(x, skip))
    attn = run_branch(runner, index, ATTENTION, block.attn_branch, x)
    if not reads_input(runner, index, MLP):  # a reused MLP output: both adds in one pass
        mlp = run_branch(runner, index, MLP, block.mlp_branch, x)
        return residual_add(x, attn, out2=mlp, into=into, copy_to=copy_to)
    x = residual_add(x, attn)
    return residual_add(x, run_branch(runner, index, MLP, block.mlp_branch, x), into=into, copy_to=copy_to)


def reused_outputs(block, runner: BranchRunner, index: int, x) -> tuple:
    """(attention, MLP) outputs of a block whose branches the runner both hands back
    (`reads_input` False): x is not read."""
    return (run_branch(runner, index, ATTENTION, block.attn_branch, x),
            run_branch(runner, index, MLP, block.mlp_branch, x))


def run_blocks(model, h, skips: list, runner, start: int, end: int, buffered: torch.dtype | None = None):
    """`UViT._run_blocks` (execution indices [start, end): in-blocks push skips, out-blocks pop
    them); `buffered` (`fast.buffer_dtype`; whole forwards only): the skips are buffers."""
    mid = len(model.in_blocks)
    index = start
    while index < end:
        if index < mid and buffered is not None:
            h, index = _buffered_in_blocks(model, h, skips, runner, index, min(end, mid), buffered)
            continue
        if index < mid:
            h = block_forward(model.in_blocks[index], h, runner=runner, index=index)
            skips.append(h)
        else:
            block = model.mid_block if index == mid else model.out_blocks[index - mid - 1]
            skip = skips.pop() if index > mid else None
            # the mid and out-blocks write their output into the left half of the next buffer
            into = skips[-1][..., : model.embed_dim] if buffered is not None and skips else None
            h = block_forward(block, h, skip, runner=runner, index=index, into=into)
        index += 1
    return h


def _buffered_in_blocks(model, h, skips: list, runner, index: int, limit: int, dtype: torch.dtype):
    """In-block `index`, or the run of in-blocks from it (below `limit`) whose branches are all
    reused, in one pass (`fused.residual_chain`); each output's cast goes into the right half
    of its out-block's buffer (N, T, 2D), pushed as the skip. Returns (h, next index)."""
    stop = index
    while stop < limit and not (reads_input(runner, stop, ATTENTION) or reads_input(runner, stop, MLP)):
        stop += 1
    stop = max(stop, index + 1)
    d = model.embed_dim
    buffers = [h.new_empty(*h.shape[:-1], 2 * d, dtype=dtype) for _ in range(stop - index)]
    if stop - index == 1:
        h = block_forward(model.in_blocks[index], h, runner=runner, index=index, copy_to=buffers[0][..., d:])
    else:
        outs = [reused_outputs(model.in_blocks[k], runner, k, h) for k in range(index, stop)]
        h = residual_chain(h, outs, [buffer[..., d:] for buffer in buffers])
    skips.extend(buffers)
    return h, stop
