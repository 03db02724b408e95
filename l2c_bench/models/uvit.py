"""U-ViT (Bao et al., 2023) with the exact state-dict layout of the official checkpoints.

Tokens are [label, time, patch_1 .. patch_L]. `depth // 2` in-blocks push their outputs on a
stack; a mid block follows; each out-block first fuses the popped skip with
`skip_linear(cat([x, skip]))`, then runs its two ungated residual branches. For the caching
engine the blocks are numbered in execution order: in-blocks, mid block, out-blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..engine.model import ATTENTION, MLP, BranchRunner, run_branch
from . import fast_uvit, fused
from .embeddings import timestep_sinusoid
from .fast import buffer_dtype, concat_for_linear
from .layers import Attention, Mlp, PatchEmbed, unpatchify


@dataclass(frozen=True)
class UViTArgs:
    img_size: int = 32  # latent side
    patch_size: int = 2
    in_chans: int = 4
    embed_dim: int = 1152
    depth: int = 28  # in-blocks + out-blocks; there is one more (mid) block
    num_heads: int = 16
    mlp_ratio: float = 4.0
    qkv_bias: bool = False
    mlp_time_embed: bool = False
    num_classes: int = 1000  # real classes; the label table has one more row, the null class
    conv: bool = False


class UViTBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, skip: bool):
        super().__init__()
        # Registration order fixes the state-dict order: norm1, attn, norm2, mlp, skip_linear.
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), gelu_approximate="none")
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None

    def attn_branch(self, x):
        return self.attn(self.norm1(x))

    def mlp_branch(self, x):
        return self.mlp(self.norm2(x))

    def forward(self, x, skip=None, runner: BranchRunner | None = None, index: int = 0):
        """x (N, T, D) -> (N, T, D); an out-block first mixes in its popped skip (N, T, D)."""
        if self.skip_linear is not None:
            # Always recomputed, also under caching: it mixes the fresh skip into x.
            x = self.skip_linear(concat_for_linear(x, skip))  # cat([x, skip], -1): (N, T, 2D) -> (N, T, D)
        x = x + run_branch(runner, index, ATTENTION, self.attn_branch, x)
        return x + run_branch(runner, index, MLP, self.mlp_branch, x)


class UViT(nn.Module):
    """forward(x (N,C,H,W), t (N,) model time (1000*t_continuous), y (N,)) -> eps (N, C, H, W)."""

    family = "uvit"  # sampler convention: DPM-Solver on the discrete VP schedule, two-pass guidance
    # architecture facts (engine/model.py)
    long_skips = True  # out-block i pops in-block (depth/2 - 1 - i)'s output: the last block reads block 0's
    dual_stream = False  # one token stream: [label, time, patches]

    def __init__(self, args: UViTArgs = UViTArgs()):
        super().__init__()
        self.args = args
        self.in_channels = self.out_channels = args.in_chans
        self.input_size = args.img_size
        self.patch_size = args.patch_size
        self.num_classes = args.num_classes
        self.embed_dim = args.embed_dim
        if args.img_size % args.patch_size:
            raise ValueError(f"img_size {args.img_size} is not divisible by patch_size {args.patch_size}")
        if args.depth % 2:
            raise ValueError(f"U-ViT depth counts in- plus out-blocks and must be even, got {args.depth}")
        num_patches = (args.img_size // args.patch_size) ** 2
        d = args.embed_dim
        self.patch_embed = PatchEmbed(args.patch_size, args.in_chans, d)
        self.time_embed = (
            nn.Sequential(nn.Linear(d, 4 * d), nn.SiLU(), nn.Linear(4 * d, d))
            if args.mlp_time_embed
            else nn.Identity()
        )
        self.label_emb = nn.Embedding(args.num_classes + 1, d)
        self.extras = 2  # label token, time token
        self.pos_embed = nn.Parameter(torch.zeros(1, self.extras + num_patches, d))
        block = dict(dim=d, num_heads=args.num_heads, mlp_ratio=args.mlp_ratio, qkv_bias=args.qkv_bias)
        self.in_blocks = nn.ModuleList(UViTBlock(**block, skip=False) for _ in range(args.depth // 2))
        self.mid_block = UViTBlock(**block, skip=False)
        self.out_blocks = nn.ModuleList(UViTBlock(**block, skip=True) for _ in range(args.depth // 2))
        self.norm = nn.LayerNorm(d)
        self.decoder_pred = nn.Linear(d, args.patch_size**2 * args.in_chans)
        self.final_layer = (
            nn.Conv2d(args.in_chans, args.in_chans, 3, padding=1) if args.conv else nn.Identity()
        )
        if self.pos_embed.device.type != "meta":
            self.initialize_weights()

    @property
    def num_blocks(self) -> int:
        return len(self.in_blocks) + 1 + len(self.out_blocks)

    @property
    def mid_block_index(self) -> int:
        """The mid block's execution index: the in-blocks (encoder) come before it, the out-blocks
        (decoder) after (an architecture fact, engine/model.py; faster_diffusion reuses up to it)."""
        return len(self.in_blocks)

    def branch_paths(self) -> list[tuple[tuple[str], tuple[str]]]:
        """Per block in execution order, its (attention, MLP) module paths (what MACs counts)."""
        blocks = ([f"in_blocks.{i}" for i in range(len(self.in_blocks))] + ["mid_block"]
                  + [f"out_blocks.{i}" for i in range(len(self.out_blocks))])
        return [((f"{b}.attn",), (f"{b}.mlp",)) for b in blocks]

    @property
    def null_class(self) -> int:
        return self.num_classes

    def initialize_weights(self) -> None:
        """U-ViT's initialisation: truncated-normal linears and pos_embed, unit LayerNorms."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _run_blocks(self, h, skips: list, runner, start: int, end: int):
        """Blocks with execution index in [start, end): in-blocks push skips, out-blocks pop them."""
        mid = len(self.in_blocks)
        for index in range(start, end):
            if index < mid:
                h = self.in_blocks[index](h, runner=runner, index=index)
                skips.append(h)
            elif index == mid:
                h = self.mid_block(h, runner=runner, index=index)
            else:
                h = self.out_blocks[index - mid - 1](h, skips.pop(), runner=runner, index=index)
        return h

    def _blocks(self, h, skips: list, runner, start: int, end: int, whole: bool = False):
        """`_run_blocks`, or where our kernels run the fast runner (fast_uvit.py: same values),
        with concatenation buffers for a whole forward."""
        if fused.ready(h):
            return fast_uvit.run_blocks(self, h, skips, runner, start, end, buffer_dtype(h) if whole else None)
        return self._run_blocks(h, skips, runner, start, end)

    def forward(self, x, t, y, runner: BranchRunner | None = None):
        h = self.patch_embed(x)  # (N, L, D)
        time_token = self.time_embed(timestep_sinusoid(t, self.embed_dim)).unsqueeze(1)  # (N, 1, D)
        label_token = self.label_emb(y).unsqueeze(1)  # (N, 1, D)
        h = torch.cat([label_token, time_token, h], dim=1) + self.pos_embed  # (N, 2 + L, D)
        skips: list[torch.Tensor] = []
        span = getattr(runner, "span", None)
        if span is None:
            h = self._blocks(h, skips, runner, 0, self.num_blocks, whole=True)
        else:  # block-level caching; extras = the skips the span leaves on the stack
            start, end = span

            def run_span(x):
                depth = len(skips)
                out = self._blocks(x, skips, runner, start, end)
                added = skips[depth:]
                del skips[depth:]
                return out, added

            blocks_in = h
            h = self._blocks(h, skips, runner, 0, start)
            span_in = h
            # indicator for a dynamic cache: U-ViT has no adaLN, so "modulated" is the blocks' input
            # tokens (time and label tokens included); "residual" the blocks before the span
            h, added = runner.run_span(h, run_span, probe=lambda kind: span_in - blocks_in if kind == "residual"
                                       else blocks_in)
            skips.extend(added)
            h = self._blocks(h, skips, runner, end, self.num_blocks)
        h = self.decoder_pred(self.norm(h))[:, self.extras :]  # (N, L, p*p*C)
        return self.final_layer(unpatchify(h, self.in_channels, self.patch_size))
