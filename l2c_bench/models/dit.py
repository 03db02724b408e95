"""DiT (Peebles & Xie, 2023) with the exact state-dict layout of the official checkpoints.

Every block has two residual branches added through adaLN-Zero gates:
    x = x + gate_msa * attn(modulate(norm1(x), shift_msa, scale_msa))
    x = x + gate_mlp * mlp(modulate(norm2(x), shift_mlp, scale_mlp))
The branch outputs *before* the gate are what layer caching reuses; the gates, shifts and
scales always come from the current timestep (see `l2c_bench.caching`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..engine.model import ATTENTION, MLP, BranchRunner, run_branch, unknown_probe
from .embeddings import sincos_2d_grid, timestep_sinusoid
from .fast import adaln_input, gated_residual, rowwise_linear
from .layers import Attention, Mlp, PatchEmbed, unpatchify


@dataclass(frozen=True)
class DiTArgs:
    input_size: int = 32  # latent side (256px -> 32, 512px -> 64)
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: int = 1000  # real classes; the label table has one more row, the null class
    learn_sigma: bool = True


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation; x (N, T, D), shift/scale (N, D)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class TimestepEmbedder(nn.Module):
    """256-d sinusoid of the (original, 0..999) timestep -> MLP -> (N, D). Keys `mlp.0`, `mlp.2`."""

    frequency_dim = 256

    def __init__(self, hidden_size: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(self.frequency_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        h = rowwise_linear(self.mlp[0], timestep_sinusoid(t, self.frequency_dim))  # (N, D)
        return rowwise_linear(self.mlp[2], self.mlp[1](h))


class LabelEmbedder(nn.Module):
    """Label table of num_classes + 1 rows; row `num_classes` is the learned null class."""

    def __init__(self, num_classes: int, hidden_size: int):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, hidden_size)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(y)


class DiTBlock(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        # Registration order fixes the state-dict order: attn, mlp, adaLN_modulation.
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), gelu_approximate="tanh")
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def attn_branch(self, x, shift, scale):
        return self.attn(modulate(self.norm1(x), shift, scale))

    def mlp_branch(self, x, shift, scale):
        return self.mlp(modulate(self.norm2(x), shift, scale))

    def forward(self, x, c_act, runner: BranchRunner | None = None, index: int = 0):
        # x (N, T, D), c_act = adaln_input(c) (N, D) -> six (N, D) modulation vectors
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            rowwise_linear(self.adaLN_modulation[1], c_act).chunk(6, dim=1)
        )
        attn = run_branch(runner, index, ATTENTION, self.attn_branch, x, shift_msa, scale_msa)
        x = gated_residual(x, gate_msa, attn)
        mlp = run_branch(runner, index, MLP, self.mlp_branch, x, shift_mlp, scale_mlp)
        return gated_residual(x, gate_mlp, mlp)


class FinalLayer(nn.Module):
    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x, c_act):  # c_act = adaln_input(c)
        shift, scale = rowwise_linear(self.adaLN_modulation[1], c_act).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))  # (N, T, p*p*C_out)


class DiT(nn.Module):
    """Class-conditional DiT. forward(x (N,C,H,W), t (N,) original timesteps, y (N,)) -> (N, C_out, H, W)."""

    family = "dit"  # sampler convention: DDIM/DDPM on the linear 1000-step schedule
    # architecture facts (engine/model.py): one residual stream of identical blocks
    long_skips = False  # no block reads another's saved output: any span's effect is its residual update
    mid_block_index = None  # no encoder/decoder split (faster_diffusion does not apply)
    dual_stream = False  # one token stream (image patches; the label enters through adaLN)

    def __init__(self, args: DiTArgs = DiTArgs()):
        super().__init__()
        self.args = args
        self.in_channels = args.in_channels
        self.out_channels = args.in_channels * 2 if args.learn_sigma else args.in_channels
        self.input_size = args.input_size
        self.patch_size = args.patch_size
        self.num_classes = args.num_classes
        if args.input_size % args.patch_size:
            raise ValueError(
                f"input_size {args.input_size} is not divisible by patch_size {args.patch_size}"
            )
        grid = args.input_size // args.patch_size
        # Fixed sin-cos table, kept as a frozen Parameter because the official checkpoints store it.
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, args.hidden_size), requires_grad=False)
        self.x_embedder = PatchEmbed(args.patch_size, args.in_channels, args.hidden_size)
        self.t_embedder = TimestepEmbedder(args.hidden_size)
        self.y_embedder = LabelEmbedder(args.num_classes, args.hidden_size)
        self.blocks = nn.ModuleList(
            DiTBlock(args.hidden_size, args.num_heads, args.mlp_ratio) for _ in range(args.depth)
        )
        self.final_layer = FinalLayer(args.hidden_size, args.patch_size, self.out_channels)
        if self.pos_embed.device.type != "meta":
            self.initialize_weights()

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def branch_paths(self) -> list[tuple[tuple[str], tuple[str]]]:
        """Per block, its (attention, MLP) module paths (what MACs counts)."""
        return [((f"blocks.{b}.attn",), (f"blocks.{b}.mlp",)) for b in range(len(self.blocks))]

    def initialize_weights(self) -> None:
        """DiT's initialisation: xavier linears, zeroed adaLN and output (adaLN-Zero)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        grid = self.input_size // self.patch_size
        table = sincos_2d_grid(self.pos_embed.shape[-1], grid)
        self.pos_embed.data.copy_(torch.from_numpy(table).float().unsqueeze(0))
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def _run_blocks(self, h, c_act, runner, start: int, end: int):
        for index in range(start, end):
            h = self.blocks[index](h, c_act, runner, index)
        return h

    def probe(self, kind: str, blocks_in, span_in, c_act) -> torch.Tensor:
        """A dynamic cache's indicator (N, T, D): "residual" = span input - blocks' input (the first
        block's residual when the span starts at block 1); "modulated" = block 0's
        timestep-modulated input, modulate(norm1(h), shift_msa, scale_msa) (TeaCache's)."""
        if kind == "residual":
            return span_in - blocks_in
        if kind == "modulated":
            block = self.blocks[0]
            shift, scale = rowwise_linear(block.adaLN_modulation[1], c_act).chunk(6, dim=1)[:2]
            return modulate(block.norm1(blocks_in), shift, scale)
        raise unknown_probe(kind)

    def forward(self, x, t, y, runner: BranchRunner | None = None):
        h = self.x_embedder(x) + self.pos_embed  # (N, T, D), T = (H/p)*(W/p)
        # SiLU of the conditioning (N, D), computed once: the input of every adaLN product
        c_act = adaln_input(self.t_embedder(t) + self.y_embedder(y))
        span = getattr(runner, "span", None)
        if span is None:
            h = self._run_blocks(h, c_act, runner, 0, len(self.blocks))
        else:  # block-level caching: the span runs (or is reused) as one unit
            start, end = span
            blocks_in = h
            h = self._run_blocks(h, c_act, runner, 0, start)
            span_in = h
            h, _ = runner.run_span(h, lambda x: (self._run_blocks(x, c_act, runner, start, end), None),
                                   probe=lambda kind: self.probe(kind, blocks_in, span_in, c_act))
            h = self._run_blocks(h, c_act, runner, end, len(self.blocks))
        h = self.final_layer(h, c_act)  # (N, T, p*p*C_out)
        return unpatchify(h, self.out_channels, self.patch_size)  # (N, C_out, H, W)
