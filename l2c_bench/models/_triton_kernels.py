"""The Triton kernels behind `fused.py` (imported by it on the first CUDA call, or in Triton's CPU
interpreter by the tests). Shapes: rows = N * T token rows of `cols` channels, all contiguous."""

import triton
import triton.language as tl


@triton.jit
def residual(x_ptr, out_ptr, out2_ptr, gate_ptr, y_ptr, z_ptr, rows, cols, tokens, gate_stride, z_stride,
             GATED: tl.constexpr, SECOND: tl.constexpr, STORE_Y: tl.constexpr, STORE_Z: tl.constexpr,
             BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    # x, out, out2, y: (rows, cols) contiguous, rows = N * T; gate: (N, cols) with row stride
    # gate_stride; z: (rows, cols) with row stride z_stride (half of a concatenation buffer)
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)  # (BLOCK_R,)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # (BLOCK_C,)
    mask = (r[:, None] < rows) & (c[None, :] < cols)
    offs = r[:, None].to(tl.int64) * cols + c[None, :]
    x = tl.load(x_ptr + offs, mask=mask).to(tl.float32)
    out = tl.load(out_ptr + offs, mask=mask).to(tl.float32)
    if GATED:
        sample = (r // tokens).to(tl.int64)  # the gate row of each token row
        gate = tl.load(gate_ptr + sample[:, None] * gate_stride + c[None, :], mask=mask).to(tl.float32)
        y = tl.fma(gate, out, x)
    else:
        y = x + out
    if SECOND:  # (x + out) rounded to the stream's dtype (x's), as PyTorch's first add stores it
        y = y.to(x_ptr.dtype.element_ty).to(tl.float32) + tl.load(out2_ptr + offs, mask=mask).to(tl.float32)
    # casts to a narrower float round to nearest even (Triton's default), as PyTorch's do
    if STORE_Y:
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)
    if STORE_Z:
        tl.store(z_ptr + r[:, None].to(tl.int64) * z_stride + c[None, :], y.to(z_ptr.dtype.element_ty), mask=mask)


@triton.jit
def concat(x_ptr, skip_ptr, y_ptr, rows, cols,
           BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    # x, skip: (rows, cols) contiguous; y: (rows, 2 * cols), y[:, :cols] = x, y[:, cols:] = skip
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (r[:, None] < rows) & (c[None, :] < cols)
    src = r[:, None].to(tl.int64) * cols + c[None, :]
    dst = r[:, None].to(tl.int64) * (2 * cols) + c[None, :]
    dtype = y_ptr.dtype.element_ty
    left = tl.load(x_ptr + src, mask=mask).to(dtype, fp_downcast_rounding="rtne")  # as PyTorch rounds
    right = tl.load(skip_ptr + src, mask=mask).to(dtype, fp_downcast_rounding="rtne")
    tl.store(y_ptr + dst, left, mask=mask)
    tl.store(y_ptr + dst + cols, right, mask=mask)


@triton.jit
def residual_chain(x_ptr, outs, copies, y_ptr, rows, cols, copy_stride,
                   BLOCKS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    # x, y: the stream (rows, cols) contiguous; outs: 2 * BLOCKS branch outputs (rows, cols)
    # contiguous, attention and MLP of each block in turn; copies: BLOCKS tensors (rows, cols) with
    # row stride copy_stride (right halves of U-ViT's concatenation buffers)
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (r[:, None] < rows) & (c[None, :] < cols)
    offs = r[:, None].to(tl.int64) * cols + c[None, :]
    copy_offs = r[:, None].to(tl.int64) * copy_stride + c[None, :]
    y = tl.load(x_ptr + offs, mask=mask).to(tl.float32)
    for k in tl.static_range(BLOCKS):  # each add rounded to the stream's dtype, as PyTorch stores it
        y = (y + tl.load(outs[2 * k] + offs, mask=mask).to(tl.float32)).to(x_ptr.dtype.element_ty).to(tl.float32)
        y = (y + tl.load(outs[2 * k + 1] + offs, mask=mask).to(tl.float32)).to(x_ptr.dtype.element_ty).to(tl.float32)
        tl.store(copies[k] + copy_offs, y.to(copies[k].dtype.element_ty), mask=mask)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)
