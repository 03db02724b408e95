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

from ..engine.model import unknown_probe
from .embeddings import sincos_2d_grid, timestep_sinusoid
from .fused import residual_add
from .layers import (
    ATTN,
    MLP,
    Attention,
    BranchRunner,
    Mlp,
    PatchEmbed,
    autocast_dtype,
    run_branch,
    unpatchify,
)


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


def rowwise_linear(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """linear(x) for x (N, D_in) -> (N, D_out), each row's result independent of the batch size.

    BLAS picks different kernels for 1 row and for several, so a plain GEMM on the few
    conditioning rows makes sample i depend on the batch size. In float32 each row is its own
    product (a batched GEMV), bit for bit what earlier versions computed. Under autocast the
    rows go through GEMMs of exactly `ROWWISE_CHUNK` rows (zero-padded), one kernel whatever the
    batch: the batched GEMV reads the whole weight once per row, and on an H200 that made the
    adaLN products (a third of DiT-XL/2's weights, run at every step, cached or not) a large part
    of the bf16 time that caching cannot remove.

    Under autocast the weight is cast once, before any expansion: autocast would otherwise cast
    an expanded (N, D_in, D_out) view, materialising N copies of the weight.
    """
    weight, bias = linear.weight, linear.bias
    device_type = x.device.type
    if (dtype := autocast_dtype(device_type)) is not None:
        weight, x = weight.to(dtype), x.to(dtype)  # the bias stays float32, as autocast's bmm + add gave
        with torch.autocast(device_type, enabled=False):
            return _chunked(x, weight, bias)
    return _rowwise(x, weight, bias)


ROWWISE_CHUNK = 16  # rows per product under autocast: DiT-XL/2 at batch 8 with CFG is one chunk


def _rowwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    out = torch.bmm(x.unsqueeze(1), weight.t().expand(x.shape[0], -1, -1)).squeeze(1)  # (N, D_out)
    return out + bias if bias is not None else out


def _chunked(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    n = x.shape[0]
    # pad to whole chunks (ceil(N / chunk) * chunk, D_in); no copy when N is a multiple already
    padded = torch.nn.functional.pad(x, (0, 0, 0, -n % ROWWISE_CHUNK)) if n % ROWWISE_CHUNK else x
    products = [chunk @ weight.t() for chunk in padded.split(ROWWISE_CHUNK)]
    out = (products[0] if len(products) == 1 else torch.cat(products))[:n]  # (N, D_out)
    return out + bias if bias is not None else out


def adaln_input(c: torch.Tensor) -> torch.Tensor:
    """SiLU(c) for c (N, D): the input of every adaLN product of one evaluation (each block's
    `adaLN_modulation` is SiLU then Linear, and every block gets the same c). Computed once per
    evaluation instead of once per block, and under autocast cast once to its dtype, as each
    block's `rowwise_linear` would have (same values; 28 blocks' SiLU and cast kernels saved)."""
    act = torch.nn.functional.silu(c)
    dtype = autocast_dtype(c.device.type)
    return act if dtype is None else act.to(dtype)


def gated_residual(x: torch.Tensor, gate: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """x + gate * out for x (N, T, D), gate (N, D) and a branch output out (N, T, D).

    It runs for every branch at every step, cached or not. Under autocast (out in bf16/fp16, x
    and gate float32) it is one fused kernel instead of a broadcast multiply and an add, each a
    full pass over the float32 residual stream; in float32 the official order (multiply, then
    add) is kept bit for bit. A dropped branch (layer dropout) hands back the number 0.

    On CUDA the fused kernel is our own (`fused.residual_add`, the same values as addcmul):
    PyTorch's addcmul over mixed dtypes takes its slow casting path (28.5 us per DiT-XL/2 call
    on an H200, where the 47 MB it moves take about 10 us at full bandwidth).
    The addcmul runs with autocast switched off: autocast lists addcmul as "promote to the
    widest type" and would first write a float32 copy of `out` and read it back (18 bytes per
    element in all), while CUDA's kernel casts a bfloat16 input as it reads it (10 bytes). Same
    values: bfloat16/float16 -> float32 is exact. (A CPU kernel still makes the copy itself.)
    """
    device_type = x.device.type
    if isinstance(out, torch.Tensor) and autocast_dtype(device_type) is not None:
        # set_autocast_enabled rather than a `torch.autocast(enabled=False)` block: this runs
        # 2 x depth times per evaluation, and the context manager costs several microseconds
        torch.set_autocast_enabled(device_type, False)
        try:
            return residual_add(x, out, gate)  # CUDA: a Triton kernel (models/fused.py), else addcmul
        finally:
            torch.set_autocast_enabled(device_type, True)
    return x + gate.unsqueeze(1) * out


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
        attn = run_branch(runner, index, ATTN, self.attn_branch, x, shift_msa, scale_msa)
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

    family = "dit"

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
