"""Embeddings shared by DiT and U-ViT: sinusoidal timestep features and the fixed 2-D sin-cos grid."""

from __future__ import annotations

import math

import numpy as np
import torch


def timestep_sinusoid(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of (possibly fractional) timesteps, in [cos, sin] order.

    t: (N,) -> (N, dim). Both DiT (dim 256, then an MLP) and U-ViT (dim D, used raw as the
    time token) use this layout with max_period 10000; an odd `dim` gets one zero column.
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t[:, None].float() * freqs[None]  # (N, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (N, 2*half)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def _sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """(M,) positions -> (M, dim) as [sin(pos*omega), cos(pos*omega)], omega_k = 10000^(-k/(dim/2))."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = np.einsum("m,d->md", positions.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_2d_grid(dim: int, grid_size: int) -> np.ndarray:
    """Fixed MAE-style 2-D sin-cos position table, (grid_size**2, dim), float64.

    Token index = row * G + col. The first half of the channels encodes the column,
    the second half the row (the layout of the official DiT checkpoints).
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs a hidden size divisible by 4, got {dim}")
    rows, cols = np.meshgrid(np.arange(grid_size), np.arange(grid_size), indexing="ij")
    return np.concatenate(
        [_sincos_1d(dim // 2, cols), _sincos_1d(dim // 2, rows)], axis=1
    )
