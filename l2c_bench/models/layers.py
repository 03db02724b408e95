"""Layers shared by DiT and U-ViT, named so that state dicts match the official checkpoints."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# The numerics a run or benchmark names (`dtype=...`): the dtype autocast computes in, None for float32.
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast computes in on this device type now; None when autocast is off."""
    if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


# Layers whose weight autocast casts at every call (linear, conv); see `cast_weights_`.
CAST_ONCE_LAYERS = (nn.Linear, nn.Conv2d)


def cast_weights_(model: nn.Module, dtype: torch.dtype) -> int:
    """Store every linear and conv weight of a frozen model in `dtype` (bf16/fp16), in place, once.

    Returns the bytes freed. Why: the model is frozen (requires_grad False), so autocast's cast
    cache does not apply and every linear/conv call casts its float32 weight again. For DiT-XL/2
    that is 2.7 GB read and 1.35 GB written per evaluation, a third of it for the adaLN products
    that run whether a branch is cached or not. Autocast rounds float32 to `dtype` exactly as
    this does, and casts nothing already in `dtype`, so every output is bit for bit the same.
    Biases, norms, embeddings and the positional table stay float32 (autocast decides per op
    what they become; the adaLN bias is added in float32, see `fast.rowwise_linear`).

    Afterwards the model only runs under autocast in `dtype`; a forward pre-hook says so
    instead of a dtype mismatch deep inside a matmul.
    """
    if dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"weights are cast once to bfloat16 or float16 (autocast's dtypes), not {dtype}")
    stored = getattr(model, "weights_dtype", torch.float32)
    if stored == dtype:
        return 0
    if stored != torch.float32:  # a second rounding would differ from autocast's single one
        raise ValueError(f"the weights are stored in {stored} already; cast from the float32 model to get {dtype}")
    freed = 0
    for module in model.modules():
        if isinstance(module, CAST_ONCE_LAYERS) and module.weight.dtype == torch.float32:
            weight = module.weight
            weight.data = weight.data.to(dtype)  # the same Parameter: state-dict keys and hooks unchanged
            freed += weight.numel() * (4 - weight.element_size())
    model.weights_dtype = dtype
    model.register_forward_pre_hook(_require_autocast(dtype), with_kwargs=True)
    return freed


def weights_dtype(model: nn.Module) -> str:
    """'fp32', or 'bf16'/'fp16' after `cast_weights_`: recorded beside each timing."""
    stored = getattr(model, "weights_dtype", torch.float32)
    return next(name for name, dtype in AUTOCAST_DTYPES.items() if (dtype or torch.float32) == stored)


def _require_autocast(dtype: torch.dtype):
    def check(module: nn.Module, args, kwargs) -> None:
        x = args[0] if args else next(v for v in kwargs.values() if isinstance(v, torch.Tensor))
        device_type = x.device.type
        if autocast_dtype(device_type) != dtype:
            raise RuntimeError(f"{type(module).__name__} stores its linear/conv weights in {dtype} "
                               f"(cast_weights_): call it under torch.autocast({device_type!r}, dtype={dtype})")

    return check


class PatchEmbed(nn.Module):
    """(N, C, H, W) -> (N, (H/p)*(W/p), D) row-major tokens, with a strided conv (key `proj`).

    The conv's output read as tokens is a transposed view (token stride 1, channel stride T).
    Returned as it is, as the official code does, DiT's `x + pos_embed` and every later
    elementwise op on the residual stream inherit that layout: each LayerNorm then copies the
    stream to row-major first, and each gated residual add reads the row-major branch output
    across the grain. Copying once here keeps every value and removes those passes (per DiT
    evaluation 2 x depth + 1 copies, and every gate-and-add, the work a cached branch still
    does, made layout-matched).
    """

    def __init__(self, patch_size: int, in_channels: int, hidden_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, hidden_size, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % self.patch_size or x.shape[-2] % self.patch_size:
            raise ValueError(f"input {tuple(x.shape)} is not divisible by patch {self.patch_size}")
        return self.proj(x).flatten(2).transpose(1, 2).contiguous()  # (N, D, h, w) -> (N, h*w, D)


class Attention(nn.Module):
    """Multi-head self-attention with keys `qkv` and `proj`, using fused SDPA."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        # (N, T, 3D) -> (3, N, heads, T, D/heads)
        qkv = self.qkv(x).reshape(n, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (N, heads, T, D/heads)
        return self.proj(out.transpose(1, 2).reshape(n, t, d))


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2 (DiT: tanh-approximated GELU; U-ViT: exact GELU)."""

    def __init__(self, dim: int, hidden: int, gelu_approximate: str):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate=gelu_approximate)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def unpatchify(x: torch.Tensor, channels: int, patch_size: int) -> torch.Tensor:
    """(N, h*w, p*p*C) -> (N, C, h*p, w*p); each token is read as (p, p, C), channels last."""
    n, tokens, _ = x.shape
    grid = int(round(tokens**0.5))
    if grid * grid != tokens:
        raise ValueError(f"unpatchify expects a square token grid, got {tokens} tokens")
    x = x.reshape(n, grid, grid, patch_size, patch_size, channels)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(n, channels, grid * patch_size, grid * patch_size)


def compile_branches(model: nn.Module, **options) -> nn.Module:
    """`torch.compile` every block's attention and MLP branch function, in place.

    The caching engine decides in Python which branches run, so only the branch bodies are
    compiled: one graph per branch kind serves every block (module weights are graph inputs)
    and every step of any schedule (no recompilation per step or per cache pattern).
    """
    blocks = [m for m in model.modules() if hasattr(m, "attn_branch") and hasattr(m, "mlp_branch")]
    for block in blocks:
        block.attn_branch = torch.compile(block.attn_branch, dynamic=False, **options)
        block.mlp_branch = torch.compile(block.mlp_branch, dynamic=False, **options)
    return model
