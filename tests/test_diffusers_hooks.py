"""diffusers' own cache hooks as peers (`caching.methods.diffusers_hooks`): they run through the
same rows and MACs as our methods, and FirstBlockCache decides as our fbcache does."""

import pytest
import torch
from test_diffusers_zoo import counted_macs
from torch.utils.flop_counter import FlopCounterMode

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


def generate_counted(model, **kw):
    """generate(model, **kw) and the MACs per image of the linear and convolution layers it ran
    (guidance off: one image per sample)."""
    return counted_macs(len(kw["labels"]), generate, model, **kw)


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
        theirs, ran = generate_counted(model, cache=make_cache("diffusers_fbcache", threshold=threshold), **kw)
        assert torch.equal(ours.schedule, theirs.schedule)  # the same evaluations skip the same blocks
        assert (ours.latents - theirs.latents).abs().max() <= 1e-5
        reused.append(theirs.cached_ratio)
        # what their hooks ran is what both plans count: the skipped blocks ran nothing
        assert macs(model, theirs.schedule, nfe=20, plan=theirs.plan) == ran == macs(model, ours.schedule, nfe=20,
                                                                                      plan=ours.plan)
    assert 0 < reused[0] < reused[1]  # a larger threshold reuses more: the test sees real decisions


def test_diffusers_taylorseer_counts_the_branches_it_let_run():
    torch.manual_seed(0)
    model = build_zoo("FluxTransformer2DModel").eval()
    result, ran = generate_counted(model, cache=make_cache("diffusers_taylorseer"), **kwargs(model))
    schedule = result.schedule
    assert schedule[:3].all()  # its warm-up evaluations compute everything
    forecast = ~schedule[:, :, ATTENTION]
    assert forecast.any() and (forecast == forecast[:, :1]).all()  # whole evaluations of attention forecast
    assert schedule[:, :, MLP].all()  # it hooks the attention modules only
    assert macs(model, schedule, nfe=20, plan=result.plan) == ran < macs(model, None, nfe=20)  # what ran
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


@pytest.mark.parametrize("cls", ["trained", "FluxTransformer2DModel"])
def test_diffusers_pab_is_our_engine_reusing_attention_on_the_same_evaluations(cls, trained_dit):
    """PAB's rule, from the sampler's timesteps: attention runs at the first call, outside
    (100, 800) and at every `interval`-th call; reused elsewhere. Our engine's static plan that
    reuses the attention branch on those evaluations gives the same samples, bit for bit."""
    from l2c_bench.engine.core import FixedPlan, Plan

    torch.manual_seed(0)
    model = trained_dit if cls == "trained" else build_zoo(cls).eval()
    kw = kwargs(model)
    theirs, ran = generate_counted(model, cache=make_cache("diffusers_pab", interval=3), **kw)
    timesteps = []  # the model time of each evaluation, as the sampler passes it
    handle = model.register_forward_pre_hook(lambda module, args: timesteps.append(float(args[1][0])))
    generate(model, **kw)
    handle.remove()
    attention = [n == 0 or not 100 < float(t) < 800 or n % 3 == 0 for n, t in enumerate(timesteps)]
    assert torch.equal(theirs.schedule[:, :, ATTENTION], torch.tensor(attention)[:, None].expand(20, model.num_blocks))
    assert theirs.schedule[:, :, MLP].all() and not all(attention)
    compute = tuple(((a, True),) * model.num_blocks for a in attention)
    ours = generate(model, cache=FixedPlan(Plan(compute, tuple(n for n, a in enumerate(attention) if not a)), "pab"),
                    **kw)
    assert torch.equal(ours.latents, theirs.latents)
    assert macs(model, theirs.schedule, nfe=20, plan=theirs.plan) == ran < macs(model, None, nfe=20)  # what ran


@pytest.mark.parametrize("cls", ["trained", "SD3Transformer2DModel"])
def test_diffusers_magcache_calibrates_then_skips_the_stack_by_its_accumulated_drift(cls, trained_dit):
    """The ratios are diffusers' calibration: per step, the mean over tokens of |r_n| / |r_n-1|
    with r the whole stack's residual on the image tokens. The skipped evaluations follow
    MagCache's rule from those ratios, and a skipped one is its input plus the last residual:
    our engine's static plan reusing the whole stack's offset there gives the same samples."""
    from l2c_bench.caching.methods.diffusers_hooks import mag_ratios
    from l2c_bench.engine.core import FixedPlan, Plan
    from l2c_bench.engine.rules import Span

    torch.manual_seed(0)
    model = trained_dit if cls == "trained" else build_zoo(cls).eval()
    kw = kwargs(model)
    ratios = mag_ratios(model, sampler=kw["sampler"], nfe=20, samples=2, seed=0)
    residuals = []  # the stack's residual per evaluation, image tokens (N, T, D)

    first, last = model.blocks[0], model.blocks[-1]
    h_in = first.register_forward_pre_hook(lambda m, a, k: residuals.append(k.get("hidden_states", a[0] if a else None)),
                                           with_kwargs=True)
    h_out = last.register_forward_hook(lambda m, a, out: residuals.append(out[-1] if isinstance(out, tuple) else out))
    generate(model, labels=[0, 1], seeds=[0, 1], steps=20, sampler=kw["sampler"], guidance_scale=1.0)
    h_in.remove(), h_out.remove()
    r = [after - before for before, after in zip(residuals[0::2], residuals[1::2], strict=True)]
    expected = [1.0] + [float((r[n].norm(dim=-1) / (r[n - 1].norm(dim=-1) + 1e-8)).mean()) for n in range(1, 20)]
    assert ratios == pytest.approx(expected, rel=1e-5)
    threshold = 0.1
    method = make_cache("diffusers_magcache", threshold=threshold).calibrated(model, kw["sampler"], 20, ratios)
    theirs, ran = generate_counted(model, cache=method, **kw)
    skip, ratio, err, steps = [], 1.0, 0.0, 0  # MagCache's rule, from its paper and hook
    for n in range(20):
        skipped = False
        if n >= int(0.2 * 20 + 0.5):
            ratio, steps = ratio * ratios[n], steps + 1
            err += abs(1 - ratio)
            skipped = n > 0 and err <= threshold and steps <= 3
            if not skipped:
                ratio, err, steps = 1.0, 0.0, 0
        skip.append(skipped)
    assert any(skip) and not all(skip)
    assert torch.equal(theirs.schedule, ~torch.tensor(skip)[:, None, None].expand(20, model.num_blocks, 2))
    assert macs(model, theirs.schedule, nfe=20, plan=theirs.plan) == ran  # a skipped evaluation runs no block
    compute = tuple(((not s, not s),) * model.num_blocks for s in skip)
    ours = Plan(compute, tuple(n for n, s in enumerate(skip) if s), rule=Span(((0, model.num_blocks),) * 20, "delta"))
    assert (generate(model, cache=FixedPlan(ours, "stack"), **kw).latents - theirs.latents).abs().max() <= 1e-5


def test_a_magcache_run_calibrates_first_and_records_its_ratios_and_what_ran(tmp_path):
    from test_run import config

    from l2c_bench.run import run_point

    row = run_point(config(tmp_path, "tracker=none", "model=diffusers", "model.diffusers_class=FluxTransformer2DModel",
                           "model.checkpoint=random",  # the toy configuration build_zoo gives (MACs below)
                           "cache=diffusers_magcache", "cache.threshold=0.3", "steps=10"))
    assert row["status"] == "ok", row.get("error")
    m = {k.removeprefix("metrics."): v for k, v in row.items() if k.startswith("metrics.")}
    assert len(m["magcache_ratios"]) == 10 and m["magcache_ratios"][0] == 1.0
    assert 0 < m["cached_ratio"] <= 0.8 and m["host_sync_per_evaluation"]
    schedule = torch.load(tmp_path / row["run_id"] / "schedule.pt")["schedule"]
    assert schedule[:2].all() and (schedule == schedule[:, :1, :1]).all()  # whole evaluations, after its first 2
    # its MACs: an evaluation MagCache skipped runs what lies outside the blocks, the others all of
    # one forward (torch's FLOP counter over one image's forward, per module)
    model = build_zoo("FluxTransformer2DModel").eval()
    x = torch.randn(1, model.in_channels, model.input_size, model.input_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, torch.tensor([500.0]), torch.tensor([1]))
    flops = counter.get_flop_counts()
    assert set(flops["Global"]) <= {torch.ops.aten.addmm, torch.ops.aten.mm}  # linear layers only
    full = sum(flops["Global"].values()) / 2
    outside = full - sum(sum(flops[f"FluxAdapter.{path}"].values()) for path in model.block_paths) / 2
    computed = schedule.double()[:, 0, 0]  # per evaluation, the share of samples that ran the blocks
    assert m["macs_uncached_g"] * 1e9 == pytest.approx(10 * full, rel=1e-12)
    assert m["macs_g"] * 1e9 == pytest.approx((computed * full + (1 - computed) * outside).sum().item(), rel=1e-12)
    assert m["macs_speedup"] == pytest.approx(m["macs_uncached_g"] / m["macs_g"]) and m["macs_speedup"] > 1


def test_magcache_planned_without_a_run_calibrates_once_per_model_sampler_and_nfe(monkeypatch):
    from l2c_bench.caching.methods import diffusers_hooks

    calls = []
    calibrate = diffusers_hooks.mag_ratios
    monkeypatch.setattr(diffusers_hooks, "mag_ratios", lambda model, **kw: calls.append(kw) or calibrate(model, **kw))
    torch.manual_seed(0)
    model = build_zoo("FluxTransformer2DModel").eval()
    method = make_cache("diffusers_magcache")
    kw = kwargs(model, steps=6)
    first, again = generate(model, cache=method, **kw), generate(model, cache=method, **kw)
    assert len(calls) == 1 and torch.equal(first.latents, again.latents)  # generate plans per call
    generate(model, cache=method, **kwargs(model, steps=8))
    assert [c["nfe"] for c in calls] == [6, 8]  # another NFE is another calibration
