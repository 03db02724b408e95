"""Fused CUDA kernels (Triton) for the always-run elementwise work of a mixed-precision evaluation.

Under autocast the residual stream is float32 while branch outputs are bf16/fp16. PyTorch's CUDA
elementwise kernels take a slow path when their operands' dtypes differ: every element is cast
through a dynamic dtype switch, with no vector loads. On an H200 (DiT-XL/2, 16 rows of 256 x 1152)
that path ran the gated residual add `x + gate * out` at 28.5 us per call (47 MB: 1.7 TB/s),
1.6 of the 2.7 ms of kernels per evaluation when every branch is reused, and U-ViT-H/2's
ungated `x + out` at 10.9 us and its skip concatenation's two strided casting copies at 14.7 us.
The kernels here do the same arithmetic with vector loads: each reads every operand once in its
own dtype and writes the result once.

Same values as PyTorch, bit for bit (tests/test_fused.py, on CUDA; the CPU run of those tests uses
Triton's interpreter and checks the indexing):

- `residual_add(x, out, gate)`: `torch.addcmul(x, gate[:, None], out)`, which CUDA computes as
  one fused multiply-add in float32, `fma(gate, float(out), x)`; and `x + out`, one rounding.
- `concat_cast(x, skip, dtype)`: `cat([x, skip], -1).to(dtype)`; casts round to nearest even.

Each function falls back to the PyTorch expression whenever the fast path does not apply: not
CUDA, no Triton, non-contiguous operands, a tensor that needs a gradient (router learning
differentiates through the residual adds; these kernels have no backward), or operands that
already share one dtype (PyTorch's vectorised kernels are then as fast).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

# Triton ships with PyTorch's CUDA wheels on Linux; a CPU-only install has none. Imported on the
# first CUDA call only (`_kernels`): importing it costs every process a fifth of a second.
HAVE_TRITON = importlib.util.find_spec("triton") is not None
ENABLED = True  # `switched(False)` (`bench --no-fused`) times PyTorch's path in the same process
BLOCK_ROWS = 16  # token rows per program
BLOCK_COLS = 128  # channels per program: contiguous, so loads vectorise (128 bit: 4 fp32 / 8 bf16)


def _kernels():
    """The Triton kernels (`_triton_kernels.py`), imported once, on first use."""
    from . import _triton_kernels

    return _triton_kernels


def _fast(*tensors: torch.Tensor) -> bool:
    """Whether the Triton path applies: CUDA (or Triton's CPU interpreter), contiguous, no gradient."""
    if not (HAVE_TRITON and ENABLED):
        return False
    if not all(t.is_contiguous() and not t.requires_grad for t in tensors):
        return False
    return all(t.is_cuda for t in tensors) or (interpreting() and not any(t.is_cuda for t in tensors))


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1, the CPU tests)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def _grid(rows: int, cols: int) -> tuple[int, int]:
    return -(-rows // BLOCK_ROWS), -(-cols // BLOCK_COLS)


def residual_add(x: torch.Tensor, out: torch.Tensor | float, gate: torch.Tensor | None = None) -> torch.Tensor:
    """`torch.addcmul(x, gate[:, None], out)` (gate given) or `x + out`, for x and out (N, T, D)
    and gate (N, D); a new tensor in the promoted dtype.

    The Triton kernel runs only when the dtypes differ (x float32, out bf16/fp16); otherwise, off
    CUDA, and for a dropped branch (out the number 0), the PyTorch expression.
    """
    if not isinstance(out, torch.Tensor):
        return x + out if gate is None else x + gate.unsqueeze(1) * out
    # cheapest tests first: on a CPU this runs 2 x depth times per evaluation and falls back
    mixed = x.dtype != out.dtype or (gate is not None and gate.dtype != out.dtype)
    if not (mixed and x.dim() == 3 and x.shape == out.shape and _fast(x, out)):
        return x + out if gate is None else torch.addcmul(x, gate.unsqueeze(1), out)
    if gate is not None and not (gate.shape == (x.shape[0], x.shape[-1]) and gate.stride(1) == 1
                                 and not gate.requires_grad and gate.device == x.device):
        return torch.addcmul(x, gate.unsqueeze(1), out)
    dtype = torch.promote_types(x.dtype, out.dtype)
    if gate is not None:
        dtype = torch.promote_types(dtype, gate.dtype)
    n, tokens, cols = x.shape
    y = torch.empty(x.shape, dtype=dtype, device=x.device)
    _kernels().residual[_grid(n * tokens, cols)](
        x, out, x if gate is None else gate, y, n * tokens, cols, tokens,
        0 if gate is None else gate.stride(0),
        GATED=gate is not None, BLOCK_R=BLOCK_ROWS, BLOCK_C=BLOCK_COLS)
    return y


def concat_cast(x: torch.Tensor, skip: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """cat([x, skip], -1).to(dtype): (N, T, D) twice -> (N, T, 2D), in one pass.

    Off the Triton path, each half is cast as it is copied into the output (two strided copies).
    """
    if x.shape == skip.shape and x.dim() == 3 and _fast(x, skip):
        n, tokens, cols = x.shape
        y = torch.empty(n, tokens, 2 * cols, dtype=dtype, device=x.device)
        _kernels().concat[_grid(n * tokens, cols)](x, skip, y, n * tokens, cols,
                                                BLOCK_R=BLOCK_ROWS, BLOCK_C=BLOCK_COLS)
        return y
    d = x.shape[-1]
    y = x.new_empty(*x.shape[:-1], d + skip.shape[-1], dtype=dtype)
    y[..., :d].copy_(x)
    y[..., d:].copy_(skip)
    return y


def active(device: torch.device, autocast: torch.dtype | None) -> bool:
    """Whether these kernels run on `device` with autocast in `autocast` (None: off), the
    `fused_kernels` column: CUDA with Triton, not switched off, and autocast on (only then do the
    residual stream and the branch outputs differ in dtype)."""
    return HAVE_TRITON and ENABLED and torch.device(device).type == "cuda" and autocast is not None


@contextmanager
def switched(enabled: bool) -> Iterator[None]:
    """These kernels on or off inside the block, as they were after it."""
    global ENABLED
    previous, ENABLED = ENABLED, enabled
    try:
        yield
    finally:
        ENABLED = previous
