"""Our Triton kernels for the mixed-dtype always-run work (models/fused.py) give PyTorch's values.

On CUDA bit for bit, kernel by kernel and whole samples. On the CPU (CI) Triton's interpreter runs
the same kernels, which proves their indexing (masked edges, the gate's row stride, both halves
of the concatenation, a half of a buffer as output); the interpreter computes with numpy, which
has no fused multiply-add and casts to bfloat16 by truncation, so there the gated add is compared
with a separately rounded product and bfloat16 casts with a one-unit tolerance, while float16
(rounded to nearest even, as on CUDA) is compared bit for bit, whole U-ViT samples included.
"""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from l2c_bench import generate
from l2c_bench.caching import FixedPlan, Plan, make_cache
from l2c_bench.models import build_model, fused

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (run on the device machine)")
TRITON = pytest.mark.skipif(not fused.HAVE_TRITON, reason="this PyTorch install has no Triton (a CPU-only wheel)")

SHAPES = [(3, 7, 200), (2, 64, 128)]  # ragged edges on both block axes; whole blocks


def _operands(shape, out_dtype, device):
    torch.manual_seed(0)
    n, _, d = shape
    x = torch.randn(shape, device=device)
    out = torch.randn(shape, device=device).to(out_dtype)
    gate = torch.randn(n, 6 * d, device=device).chunk(6, dim=1)[2]  # as adaLN gives it: row stride 6D
    return x, out, gate


INTERPRETED = textwrap.dedent("""
    import torch
    from l2c_bench.models import fused

    launches = []

    class Spy:  # counts kernel launches, so a silent fallback to PyTorch cannot pass
        def __init__(self, kernel, name):
            self.kernel, self.name = kernel, name

        def __getitem__(self, grid):
            launches.append(self.name)
            return self.kernel[grid]

    kernels = fused._kernels()
    kernels.residual, kernels.concat = Spy(kernels.residual, "residual"), Spy(kernels.concat, "concat")
    kernels.residual_chain = Spy(kernels.residual_chain, "chain")
    for shape in SHAPES:
        torch.manual_seed(0)
        n, t, d = shape
        x = torch.randn(shape)
        gate = torch.randn(n, 6 * d).chunk(6, dim=1)[2]
        for dtype in (torch.bfloat16, torch.float16):
            out = torch.randn(shape).to(dtype)
            got = fused.residual_add(x, out, gate)
            assert got.dtype == torch.float32
            assert torch.equal(got, x + gate.unsqueeze(1) * out.float()), (shape, dtype)  # numpy: product rounded
            assert torch.equal(fused.residual_add(x, out), x + out), (shape, dtype)
            skip = torch.randn(shape)
            for first in (x, out):  # U-ViT's first out-block (both float32) and the others
                got = fused.concat_cast(first, skip, dtype)
                want = torch.cat([first.float(), skip], -1).to(dtype)
                assert got.shape == (n, t, 2 * d) and got.dtype == dtype
                if dtype == torch.float16:  # numpy rounds to nearest even, as CUDA does
                    assert torch.equal(got, want), shape
                else:  # the interpreter truncates to bfloat16: at most one unit in the last place apart
                    assert ((got.float() - want.float()).abs() <= want.float().abs() * 2**-7).all(), shape
    assert len(launches) == len(SHAPES) * 2 * 4, len(launches)
    # U-ViT's options, float16 (exact here): a second branch, a buffer half as output or copy
    for shape in SHAPES:
        torch.manual_seed(1)
        n, t, d = shape
        a, m = torch.randn(shape).half(), torch.randn(shape).half()
        for x in (torch.randn(shape), torch.randn(shape).half()):  # in-blocks' float32 stream, out-blocks' fp16
            y = (x + a) + m
            assert torch.equal(fused.residual_add(x, a, out2=m), y)
            buffer = torch.zeros(n, t, 2 * d, dtype=torch.float16)
            got = fused.residual_add(x, a, out2=m, into=buffer[..., :d])
            assert got.data_ptr() == buffer.data_ptr() and torch.equal(buffer[..., :d], y.half())
            assert torch.equal(buffer[..., d:], torch.zeros(n, t, d, dtype=torch.float16))  # masked: no spill
            assert torch.equal(fused.residual_add(x, a, copy_to=buffer[..., d:]), x + a)
            assert torch.equal(buffer[..., d:], (x + a).half())
    assert len(launches) == len(SHAPES) * 8 + len(SHAPES) * 2 * 3, len(launches)
    # consecutive in-blocks with every branch reused: one pass per fused.MAX_CHAIN blocks
    for blocks in (2, fused.MAX_CHAIN + 1):
        n, t, d = SHAPES[0]
        x = torch.randn(SHAPES[0])
        outs = [(torch.randn(SHAPES[0]).half(), torch.randn(SHAPES[0]).half()) for _ in range(blocks)]
        buffers = [torch.zeros(n, t, 2 * d, dtype=torch.float16) for _ in range(blocks)]
        before = len(launches)
        got = fused.residual_chain(x, outs, [b[..., d:] for b in buffers])
        assert launches[before:] == ["chain"] * -(-blocks // fused.MAX_CHAIN), launches[before:]
        for (a, m), buffer in zip(outs, buffers, strict=True):
            x = (x + a) + m
            assert torch.equal(buffer[..., d:], x.half()) and not buffer[..., :d].any()
        assert torch.equal(got, x)
    # a tensor that needs a gradient (router learning) takes PyTorch's path, which has a backward
    before = len(launches)
    x = torch.randn(SHAPES[0], requires_grad=True)
    out = torch.randn(SHAPES[0]).half()
    assert fused.residual_add(x, out, torch.ones(SHAPES[0][0], SHAPES[0][2])).grad_fn is not None
    assert fused.residual_add(x, out, out2=out).grad_fn is not None and len(launches) == before

    # whole U-ViT samples under float16 autocast: concatenation buffers and one-pass adds against
    # PyTorch's path, uncached and with a plan that reuses some branches (some blocks wholly)
    from l2c_bench import generate
    from l2c_bench.caching import FixedPlan, Plan, make_cache
    from l2c_bench.models import build_model

    torch.manual_seed(0)
    model = build_model("U-ViT-toy").eval().requires_grad_(False)
    for param in model.parameters():
        param.normal_(0, 0.05)
    mask = torch.rand(4, model.num_blocks, 2) < 0.5
    mask[0] = True  # the first evaluation fills the cache
    mask[2, :3] = False  # a run of three in-blocks with every branch reused
    plan = Plan(tuple(tuple((bool(a), bool(m)) for a, m in row) for row in mask.tolist()), cache_steps=(1, 2, 3))
    for cache in (None, FixedPlan(plan, "random"), make_cache("fora", interval=2)):
        def sample():
            with torch.autocast("cpu", dtype=torch.float16):
                return generate(model, labels=[1, 2], seeds=[0, 1], steps=4, sampler="dpm_solver2",
                                guidance_scale=0.4, cache=cache).latents
        before = len(launches)
        ours = sample()
        ran = launches[before:]
        with fused.switched(False):
            theirs = sample()
        assert torch.equal(ours, theirs), (cache, (ours - theirs).abs().max())
        assert len(launches) == before + len(ran)  # switched off: PyTorch's path, no launch
        # no concatenation pass: per forward at least one residual launch per block but the last
        assert "concat" not in ran and ("chain" in ran) == (cache is not None), ran
        if cache is None:  # per forward: two adds per in- and mid block, the last adds of all out-blocks but one
            assert len(ran) == 4 * 2 * (2 * (model.num_blocks // 2 + 1) + model.num_blocks // 2 - 1), len(ran)
    print("ok")
""")


@pytest.mark.slow
@TRITON
def test_kernels_index_like_pytorch_in_tritons_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}  # read when the kernels are defined: a fresh process
    code = f"SHAPES = {SHAPES!r}\n{INTERPRETED}"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_off_cuda_the_pytorch_expressions_run():
    x, out, gate = _operands((2, 5, 16), torch.bfloat16, "cpu")
    assert not fused.active(torch.device("cpu"), torch.bfloat16)
    assert torch.equal(fused.residual_add(x, out, gate), torch.addcmul(x, gate.unsqueeze(1), out.float()))
    assert torch.equal(fused.residual_add(x, out), x + out)
    assert torch.equal(fused.residual_add(x, 0.0, gate), x)  # a dropped branch hands back the number 0
    assert torch.equal(fused.concat_cast(x, out, torch.bfloat16), torch.cat([x, out.float()], -1).bfloat16())
    with fused.switched(False):
        assert not fused.ENABLED
    assert fused.ENABLED


@CUDA
@pytest.mark.parametrize("shape", SHAPES + [(16, 256, 1152)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_kernels_equal_pytorch_bit_for_bit_on_cuda(shape, dtype):
    x, out, gate = _operands(shape, dtype, "cuda")
    assert fused.active(x.device, dtype) and not fused.active(x.device, None)
    assert torch.equal(fused.residual_add(x, out, gate), torch.addcmul(x, gate.unsqueeze(1), out))
    assert torch.equal(fused.residual_add(x, out), x + out)
    skip = torch.randn(shape, device="cuda")
    for first in (x, out):
        assert torch.equal(fused.concat_cast(first, skip, dtype), torch.cat([first.float(), skip], -1).to(dtype))
    # U-ViT's options: float32 in-block stream and low-precision out-block stream
    out2 = torch.randn(shape, device="cuda").to(dtype)
    n, t, d = shape
    for stream in (x, out):
        buffer = torch.empty(n, t, 2 * d, dtype=dtype, device="cuda")
        assert torch.equal(fused.residual_add(stream, out, out2=out2), (stream + out) + out2)
        fused.residual_add(stream, out, out2=out2, into=buffer[..., :d])
        assert torch.equal(buffer[..., :d], ((stream + out) + out2).to(dtype))
        assert torch.equal(fused.residual_add(stream, out, copy_to=buffer[..., d:]), stream + out)
        assert torch.equal(buffer[..., d:], (stream + out).to(dtype))
    blocks = fused.MAX_CHAIN + 2
    outs = [(torch.randn(shape, device="cuda").to(dtype), torch.randn(shape, device="cuda").to(dtype))
            for _ in range(blocks)]
    buffers = [torch.empty(n, t, 2 * d, dtype=dtype, device="cuda") for _ in range(blocks)]
    got, want = fused.residual_chain(x, outs, [b[..., d:] for b in buffers]), x
    for (a, m), buffer in zip(outs, buffers, strict=True):
        want = (want + a) + m
        assert torch.equal(buffer[..., d:], want.to(dtype))
    assert torch.equal(got, want)


@CUDA
@pytest.mark.parametrize("arch,sampler,guidance", [("DiT-toy", "ddim", 1.5), ("U-ViT-toy", "dpm_solver2", 0.4)])
def test_samples_equal_pytorch_kernels_on_cuda(arch, sampler, guidance):
    """Whole bf16 samples, uncached and cached, with our kernels and with PyTorch's."""
    torch.manual_seed(0)
    model = build_model(arch, device="cuda").eval().requires_grad_(False)
    for param in model.parameters():  # DiT's adaLN-Zero init would make every gate zero
        param.normal_(0, 0.05)
    common = dict(labels=[1, 2, 3], seeds=[0, 1, 2], steps=4, sampler=sampler, guidance_scale=guidance)

    def sample(cache):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return generate(model, cache=cache, **common).latents

    mask = torch.rand(4, model.num_blocks, 2) < 0.5
    mask[0] = True  # the first evaluation fills the cache
    mask[2, :3] = False  # U-ViT: a run of three in-blocks with every branch reused (residual_chain)
    plan = Plan(tuple(tuple((bool(a), bool(m)) for a, m in row) for row in mask.tolist()), cache_steps=(1, 2, 3))
    for cache in (None, make_cache("fora", interval=2), FixedPlan(plan, "random")):
        ours = sample(cache)
        with fused.switched(False):
            theirs = sample(cache)
        assert torch.equal(ours, theirs)
