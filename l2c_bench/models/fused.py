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

Fewer passes, for U-ViT (same values, as each option's docstring says): `residual_add(...,
out2=)` adds a block's two branches in one pass when the second is reused (it does not read the
first's sum), and `into=` / `copy_to=` write the result (or a cast copy) straight into a half of
the next out-block's concatenation buffer, so U-ViT's whole forwards need no concatenation pass
(`models.fast.buffer_dtype`); `residual_chain` adds a run of wholly reused in-blocks in one pass.
Per U-ViT-H/2 forward with every branch reused, the blocks' 86 kernels become 31.

Each function falls back to the PyTorch expression whenever the fast path does not apply: not
CUDA, no Triton, non-contiguous operands, a tensor that needs a gradient (router learning
differentiates through the residual adds; these kernels have no backward), or operands that
already share one dtype and no option asks for more (PyTorch's vectorised kernels are then as fast).
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
MAX_CHAIN = 8  # blocks per `residual_chain` pass (one compiled kernel per length up to this)


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


def ready(x: torch.Tensor) -> bool:
    """Whether these kernels would run on x (CUDA or the interpreter, switched on, no gradient)."""
    return _fast(x)


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1, the CPU tests)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def _grid(rows: int, cols: int) -> tuple[int, int]:
    return -(-rows // BLOCK_ROWS), -(-cols // BLOCK_COLS)


def residual_add(x: torch.Tensor, out: torch.Tensor | float, gate: torch.Tensor | None = None, *,
                 out2: torch.Tensor | float | None = None, into: torch.Tensor | None = None,
                 copy_to: torch.Tensor | None = None) -> torch.Tensor:
    """`torch.addcmul(x, gate[:, None], out)` (gate given) or `x + out`, for x and out (N, T, D)
    and gate (N, D); a new tensor in the promoted dtype. Options, for U-ViT's blocks:

    - `out2`: then `+ out2` (a block whose second branch is reused: it does not read `x + out`,
      so both adds are one pass; `x + out` is rounded to the stream's dtype first, as two separate adds round it);
    - `into`: write the result, cast to `into`'s dtype, into that (N, T, D) view (the left half
      of the next out-block's concatenation buffer) and return it instead of a new tensor;
    - `copy_to`: also write a copy cast to its dtype there (an in-block's skip, into the right half).

    The Triton kernel runs when any option is given or the dtypes differ (x float32, out
    bf16/fp16); otherwise, off CUDA, and for a dropped branch (the number 0), PyTorch's expression.
    """
    if into is not None and copy_to is not None:
        raise ValueError("residual_add writes its result into `into` or returns it (and a copy to `copy_to`), not both")
    if _fused_residual(x, out, gate, out2, into, copy_to):
        n, tokens, cols = x.shape
        dtype = torch.promote_types(x.dtype, out.dtype)
        if gate is not None:
            dtype = torch.promote_types(dtype, gate.dtype)
        y = torch.empty(x.shape, dtype=dtype, device=x.device) if into is None else None
        z = into if into is not None else copy_to
        _kernels().residual[_grid(n * tokens, cols)](
            x, out, x if out2 is None else out2, x if gate is None else gate, z if y is None else y,
            x if z is None else z, n * tokens, cols, tokens, 0 if gate is None else gate.stride(0),
            0 if z is None else z.stride(1),
            GATED=gate is not None, SECOND=out2 is not None, STORE_Y=y is not None, STORE_Z=z is not None,
            BLOCK_R=BLOCK_ROWS, BLOCK_C=BLOCK_COLS)
        return into if y is None else y
    if not isinstance(out, torch.Tensor):
        y = x + out if gate is None else x + gate.unsqueeze(1) * out
    else:
        y = x + out if gate is None else torch.addcmul(x, gate.unsqueeze(1), out)
    if out2 is not None:
        y = y + out2
    if copy_to is not None:
        copy_to.copy_(y)
    return y if into is None else into.copy_(y)


def _fused_residual(x, out, gate, out2, into, copy_to) -> bool:
    """Whether `residual_add`'s Triton path applies (cheapest tests first: on a CPU this runs
    2 x depth times per evaluation and falls back)."""
    options = out2 is not None or into is not None or copy_to is not None
    if not isinstance(out, torch.Tensor) or not (options or x.dtype != out.dtype
                                                 or (gate is not None and gate.dtype != out.dtype)):
        return False
    if out2 is not None and not isinstance(out2, torch.Tensor):
        return False  # a dropped second branch: the number 0
    operands = (x, out) if out2 is None else (x, out, out2)
    if not (x.dim() == 3 and all(t.shape == x.shape for t in operands[1:]) and _fast(*operands)):
        return False
    if gate is not None and not (out2 is None and gate.shape == (x.shape[0], x.shape[-1]) and gate.stride(1) == 1
                                 and not gate.requires_grad and gate.device == x.device):
        return False
    if out2 is not None and torch.promote_types(torch.promote_types(x.dtype, out.dtype), out2.dtype) != x.dtype:
        return False  # the kernel rounds x + out to x's dtype: the stream must be x's
    return all(_rows_view(v, x) for v in (into, copy_to) if v is not None)


def _rows_view(v: torch.Tensor, x: torch.Tensor) -> bool:
    """v (N, T, D) addresses row r (= n * T + t) at r * v.stride(1): a half of a contiguous
    (N, T, 2D) buffer, or a contiguous tensor."""
    n, tokens, _ = x.shape
    return (v.shape == x.shape and v.device == x.device and not v.requires_grad and v.stride(2) == 1
            and v.stride(0) == tokens * v.stride(1))


def residual_chain(x: torch.Tensor, outs: list[tuple[torch.Tensor | float, torch.Tensor | float]],
                   copies: list[torch.Tensor]) -> torch.Tensor:
    """Consecutive U-ViT in-blocks whose branches are all reused: for each block k in turn,
    `x = (x + attn_k) + mlp_k` with a copy of the new x cast into `copies[k]` (its skip, into the
    right half of a concatenation buffer); returns the last x, a new tensor.

    Same values as `residual_add(x, attn_k, out2=mlp_k, copy_to=copies[k])` block by block (what
    runs off the fast path), in one pass per `MAX_CHAIN` blocks: the stream is read and written
    once per pass instead of once per block (per U-ViT-H/2 forward of 8 rows with every branch
    reused, 14 in-blocks: 12 kernels and 230 MB less).
    """
    if len(outs) != len(copies):
        raise ValueError(f"residual_chain: {len(outs)} blocks' outputs but {len(copies)} copies")
    # each block as residual_add's kernel would take it, and one row stride for all copies
    fast = all(_fused_residual(x, attn, None, mlp, None, copy) and copy.stride(1) == copies[0].stride(1)
               for (attn, mlp), copy in zip(outs, copies, strict=True))
    if not fast:
        for (attn, mlp), copy in zip(outs, copies, strict=True):
            x = residual_add(x, attn, out2=mlp, copy_to=copy)
        return x
    n, tokens, cols = x.shape
    for start in range(0, len(outs), MAX_CHAIN):
        part = outs[start : start + MAX_CHAIN]
        y = torch.empty_like(x)
        _kernels().residual_chain[_grid(n * tokens, cols)](
            x, tuple(t for pair in part for t in pair), tuple(copies[start : start + len(part)]), y,
            n * tokens, cols, copies[start].stride(1),
            BLOCKS=len(part), BLOCK_R=BLOCK_ROWS, BLOCK_C=BLOCK_COLS)
        x = y
    return x


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
    """These kernels on or off inside the block; the setting outside it is restored after it."""
    global ENABLED
    previous, ENABLED = ENABLED, enabled
    try:
        yield
    finally:
        ENABLED = previous
