"""The models' fast paths: the helpers DiT and U-ViT call where a plain PyTorch expression would
be slower or batch-dependent, each giving the official model's values (bit for bit in float32;
under autocast, the same casts of the same sums). The architectures (`dit.py`, `uvit.py`) call
them by name; U-ViT's buffered block runner is `fast_uvit.py`, the Triton kernels are in
`fused.py`. One switch turns the kernels and U-ViT's runner off: `fused.switched(False)` (the plain
PyTorch expressions and `UViT._run_blocks`; same samples). What each saves, and how it was
measured: docs/speed.md ("The models' fast paths")."""

from __future__ import annotations

import torch
from torch import nn

from . import fused
from .fused import concat_cast, residual_add
from .layers import autocast_dtype


# --- DiT ------------------------------------------------------------------------------------
def rowwise_linear(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """linear(x) for x (N, D_in) -> (N, D_out), each row's result independent of the batch size.

    BLAS picks different kernels for 1 row and for several, so a plain GEMM on the few
    conditioning rows would make sample i depend on the batch size. In float32 each row is its
    own product (a batched GEMV: the one-row result, whatever the batch); under autocast the
    rows go through GEMMs of exactly `ROWWISE_CHUNK` rows (zero-padded), one kernel whatever the
    batch, with the weight cast once before any expansion. Why and what it saves: docs/speed.md
    ("The models' fast paths").
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
    and gate float32) it is one fused pass (`fused.residual_add` on CUDA, else addcmul with
    autocast off, so `out` is not first copied to float32); in float32 the official order
    (multiply, then add) is kept bit for bit. A dropped branch (layer dropout) hands back the
    number 0. Same values either way: bfloat16/float16 -> float32 is exact. Measurements:
    docs/speed.md ("The models' fast paths").
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


# --- U-ViT ----------------------------------------------------------------------------------
def concat_for_linear(x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """cat([x, skip], -1): (N, T, D) twice -> (N, T, 2D), the input of an out-block's skip_linear.

    It runs in every out-block at every evaluation, cached or not. Under autocast each half is
    cast as it is copied into a buffer already in autocast's dtype (on CUDA in one Triton pass)
    instead of concatenating in float32 and casting the result. Same values: the cast of the
    concatenation is the concatenation of the casts. Whole forwards on CUDA need not even this
    pass: see `buffer_dtype`. Measurements: docs/speed.md ("The models' fast paths").
    """
    dtype = autocast_dtype(x.device.type)
    if dtype is not None and not x.dtype == skip.dtype == dtype:
        return concat_cast(x, skip, dtype)  # CUDA: one Triton pass (models/fused.py)
    return torch.cat([x, skip], dim=-1)


def buffer_dtype(h: torch.Tensor) -> torch.dtype | None:
    """The dtype of U-ViT's skip concatenation buffers for the stream h, or None (plain skips).

    Under autocast each out-block's skip_linear reads cat([x, skip]) in autocast's dtype. When
    our kernels run (`fused`: CUDA, no autograd), U-ViT's fast runner (`fast_uvit.py`) has each
    in-block write its output's cast straight into the right half of a buffer (N, T, 2D) in that
    dtype, and the block before each out-block write its output into the left half: no
    concatenation pass. Same values: each half is the same cast of the same sum.
    Not inside a span of blocks that block-level caching reuses whole: those keep plain skips.
    """
    dtype = autocast_dtype(h.device.type)
    if dtype is None or torch.is_grad_enabled() or not fused.ready(h):
        return None
    return dtype
