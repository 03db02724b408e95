"""The model side of the engine (`l2c_bench.engine.model`): what DiT and U-ViT provide, and what a
diffusers adapter must provide, checked on the toy models."""

import pytest
import torch

from l2c_bench.engine.model import ATTENTION, MLP, PROBES, CacheableModel
from l2c_bench.models import build_model


class Recording:
    """A runner that computes everything and records what the model asked for."""

    def __init__(self, span=None):
        self.span, self.calls, self.probes = span, [], {}

    def __call__(self, block, branch, fn, *args):
        self.calls.append((block, branch))
        return fn(*args)

    def run_span(self, h, fn, probe=None):
        self.probes = {kind: probe(kind) for kind in PROBES}
        return fn(h)


@pytest.mark.parametrize("arch", ["DiT-toy", "U-ViT-toy"])
def test_each_family_is_a_cacheable_model_that_routes_every_branch(arch):
    torch.manual_seed(0)
    model = build_model(arch).eval()
    assert isinstance(model, CacheableModel) and model.family in ("dit", "uvit")
    n = 2
    x = torch.randn(n, model.in_channels, model.input_size, model.input_size)
    t, y = torch.tensor([10, 500]), torch.tensor([1, 2])
    with torch.no_grad():
        plain = model(x, t, y)
        whole = Recording()
        routed = model(x, t, y, runner=whole)
        # each block's attention then MLP, blocks in execution order, each exactly once
        assert whole.calls == [(b, branch) for b in range(model.num_blocks) for branch in (ATTENTION, MLP)]
        assert torch.equal(plain, routed)  # a runner that computes everything changes nothing
        span = Recording(span=(1, model.num_blocks - 1))  # U-ViT: the last out-block takes block 0's skip
        spanned = model(x, t, y, runner=span)
    assert torch.equal(plain, spanned)
    assert set(span.probes) == set(PROBES)
    for kind, value in span.probes.items():
        assert value.shape[0] == n and value.ndim == 3, kind  # (N, T, D)
    assert span.calls == whole.calls  # the span's blocks still route their branches
