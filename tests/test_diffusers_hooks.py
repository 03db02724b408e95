"""diffusers' own cache hooks as peers (`caching.methods.diffusers_hooks`): they run through the
same rows and MACs as our methods, and FirstBlockCache decides as our fbcache does."""

import pytest
import torch

from l2c_bench import generate
from l2c_bench.caching import UnsupportedCombination, make_cache
from l2c_bench.engine.model import ATTENTION, MLP
from l2c_bench.metrics.macs import macs
from l2c_bench.models import build_model, load_checkpoint
from l2c_bench.models.loading import TOY_ASSETS
from l2c_bench.models.zoo import build_zoo, from_ours


def kwargs(model, steps=20):
    sampler = "ddim" if model.family == "dit" else "flow_euler"
    return dict(labels=[1, 2], seeds=[0, 1], steps=steps, sampler=sampler, guidance_scale=1.0)


@pytest.fixture(scope="module")
def trained_dit():
    return from_ours(load_checkpoint(build_model("DiT-toy"), TOY_ASSETS / "dit_toy.pt").eval(), official=True)


@pytest.mark.parametrize("cls", ["trained", "PixArtTransformer2DModel", "FluxTransformer2DModel"])
def test_diffusers_first_block_cache_decides_as_our_fbcache(cls, trained_dit):
    torch.manual_seed(0)
    model = trained_dit if cls == "trained" else build_zoo(cls).eval()
    kw = kwargs(model)
    reused = []
    for threshold in (0.2, 0.5):
        ours = generate(model, cache=make_cache("fbcache", threshold=threshold), **kw)
        theirs = generate(model, cache=make_cache("diffusers_fbcache", threshold=threshold), **kw)
        assert torch.equal(ours.schedule, theirs.schedule)  # the same evaluations skip the same blocks
        assert (ours.latents - theirs.latents).abs().max() <= 1e-5
        reused.append(theirs.cached_ratio)
        assert macs(model, theirs.schedule, nfe=20) < macs(model, None, nfe=20)
    assert 0 < reused[0] < reused[1]  # a larger threshold reuses more: the test sees real decisions


def test_diffusers_taylorseer_counts_the_branches_it_let_run():
    torch.manual_seed(0)
    model = build_zoo("FluxTransformer2DModel").eval()
    result = generate(model, cache=make_cache("diffusers_taylorseer"), **kwargs(model))
    schedule = result.schedule
    assert schedule[:3].all()  # its warm-up evaluations compute everything
    forecast = ~schedule[:, :, ATTENTION]
    assert forecast.any() and (forecast == forecast[:, :1]).all()  # whole evaluations of attention forecast
    assert schedule[:, :, MLP].all()  # it hooks the attention modules only
    assert macs(model, schedule, nfe=20) < macs(model, None, nfe=20)
    again = generate(model, cache=make_cache("diffusers_taylorseer"), **kwargs(model))
    assert torch.equal(again.latents, result.latents)  # fresh hook state for every call
    assert not torch.equal(generate(model, **kwargs(model)).latents, result.latents)  # and none after it


def test_a_hook_the_model_does_not_support_is_unsupported(trained_dit):
    flux_less = {"SD3Transformer2DModel": "diffusers_fbcache", "DiTTransformer2DModel": "diffusers_taylorseer"}
    for cls, method in flux_less.items():
        model = build_zoo(cls, device="meta")
        with pytest.raises(UnsupportedCombination, match="diffusers' "):
            make_cache(method).plan(model=model, sampler="ddim", nfe=10)
    with pytest.raises(UnsupportedCombination, match="model=diffusers"):
        make_cache("diffusers_fbcache").plan(model=build_model("DiT-toy", device="meta"), sampler="ddim", nfe=10)
