"""cache-dit's DBCache as a peer library (`caching.methods.cachedit`): first-block-only (F1B0) it
decides the same evaluations as our fbcache and diffusers' FirstBlockCache, its own account of
what it cached is what the engine saw not run, and the MACs count what ran."""

import sys

import pytest
import torch
from torch import nn

from l2c_bench import generate
from l2c_bench.caching import UnsupportedCombination, make_cache
from l2c_bench.metrics.macs import macs
from l2c_bench.models import build_model, load_checkpoint
from l2c_bench.models.loading import TOY_ASSETS
from l2c_bench.models.zoo import build_zoo, from_ours

pytest.importorskip("cache_dit")


def kwargs(model, steps=20):
    sampler = "ddim" if model.family == "dit" else "flow_euler"
    return dict(labels=[1, 2], seeds=[0, 1], steps=steps, sampler=sampler, guidance_scale=1.0)


def ran_macs(model, images: int, **kw):
    """generate(model, **kw) and the MACs per image of the linear and convolution layers that ran."""
    total = [0]

    def count(module, args, out):
        if isinstance(module, nn.Linear):
            total[0] += args[0].numel() * module.out_features
        else:  # a convolution: every output element sums in_channels/groups * kernel products
            total[0] += out.numel() * module.in_channels // module.groups * module.weight[0, 0].numel()

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.Conv3d))]
    try:
        out = generate(model, **kw)
    finally:
        for h in handles:
            h.remove()
    return out, total[0] / images


def skipped(schedule) -> list[int]:
    """The evaluations where every block after the first ran nothing."""
    return [n for n in range(schedule.shape[0]) if not schedule[n, 1:].any()]


@pytest.fixture(scope="module")
def trained_dit():
    return from_ours(load_checkpoint(build_model("DiT-toy"), TOY_ASSETS / "dit_toy.pt").eval(), official=True)


@pytest.mark.parametrize("cls", [pytest.param("trained", marks=pytest.mark.slow), "FluxTransformer2DModel",
                                 "SD3Transformer2DModel"])
def test_cachedit_f1b0_decides_as_our_fbcache_and_diffusers_first_block_cache(cls, trained_dit):
    """Same threshold, same decisions: cache-dit caches at ratio < threshold, the others at <=
    (they differ only at exact equality). diffusers' FirstBlockCache does not run on SD3 (its
    last block drops the text stream): there cache-dit is compared with ours only."""
    torch.manual_seed(0)
    model = trained_dit if cls == "trained" else build_zoo(cls).eval()
    kw = kwargs(model)
    decided = []
    for threshold in (0.2, 0.3):
        theirs, ran = ran_macs(model, 2, cache=make_cache("cachedit_dbcache", residual_diff_threshold=threshold,
                                                          max_warmup_steps=1), **kw)
        ours = generate(model, cache=make_cache("fbcache", threshold=threshold), **kw)
        hooks = ours if cls == "SD3Transformer2DModel" else generate(
            model, cache=make_cache("diffusers_fbcache", threshold=threshold), **kw)
        assert torch.equal(theirs.schedule, ours.schedule) and torch.equal(theirs.schedule, hooks.schedule)
        assert theirs.schedule[:, 0].all()  # the first block always runs
        assert theirs.plan.rule.hooks.batches == [skipped(theirs.schedule)]  # cache-dit's own account
        assert (theirs.latents - ours.latents).abs().max() <= 1e-5
        assert (theirs.latents - hooks.latents).abs().max() <= 1e-5
        assert macs(model, theirs.schedule, nfe=20, plan=theirs.plan) == pytest.approx(ran, rel=1e-9)
        decided.append(skipped(theirs.schedule))
        print(cls, threshold, decided[-1])  # the cross-check in docs/diffusers.md
    assert 0 < len(decided[0]) < len(decided[1])  # real decisions, more at the larger threshold
    uncached = generate(model, **kw)  # and none left on the model after it
    assert torch.equal(uncached.latents, generate(model, **kw).latents)


@pytest.mark.parametrize("cls", ["DiTTransformer2DModel", "PixArtTransformer2DModel", "WanTransformer3DModel",
                                 "SD3Transformer2DModel", "FluxTransformer2DModel"])
def test_cachedit_runs_on_each_diffusers_class_with_its_warmup_and_taylorseer(cls):
    import logging

    warned = []  # what cache-dit's interface logs (its own handler prints it): not "hooks disabled" each batch
    listener = logging.Handler()
    listener.emit = warned.append
    logging.getLogger("cache_dit.caching.cache_interface").addHandler(listener)
    torch.manual_seed(0)
    model = build_zoo(cls).eval()
    kw = kwargs(model, steps=12)
    plain = generate(model, cache=make_cache("cachedit_dbcache", residual_diff_threshold=0.3, max_warmup_steps=3), **kw)
    steps = plain.plan.rule.hooks.batches[0]
    assert steps == skipped(plain.schedule) and steps and min(steps) >= 3  # nothing cached in its warm-up
    assert plain.schedule[:3].all()
    seer = generate(model, cache=make_cache("cachedit_dbcache", residual_diff_threshold=0.3, max_warmup_steps=3,
                                            taylorseer=True), **kw)
    assert seer.plan.rule.hooks.batches[0] == skipped(seer.schedule)
    # its forecast is not the plain reuse (SD3: the text stream, dropped by the last block, is not forecast).
    # On the random toy Wan 2.1 it is, bit for bit, though its calibrator runs: not yet explained.
    assert seer.plan.rule.hooks.batches[0]
    assert torch.equal(seer.latents, plain.latents) == (cls == "WanTransformer3DModel")
    logging.getLogger("cache_dit.caching.cache_interface").removeHandler(listener)
    assert not [r for r in warned if "hooks is disabled" in r.getMessage()]


def test_what_cachedit_cannot_run_is_unsupported_with_the_reason(monkeypatch):
    with pytest.raises(UnsupportedCombination, match="model=diffusers"):  # our own DiT is no diffusers class
        make_cache("cachedit_dbcache").plan(model=build_model("DiT-toy", device="meta"), sampler="ddim", nfe=10)
    model = build_zoo("PixArtTransformer2DModel", device="meta")
    with pytest.raises(UnsupportedCombination, match=f"exceeds PixArtTransformer2DModel's {model.num_blocks} blocks"):
        make_cache("cachedit_dbcache", Fn_compute_blocks=model.num_blocks, Bn_compute_blocks=1).plan(
            model=model, sampler="flow_euler", nfe=10)
    wan22 = build_zoo("WanTransformer3DModel", boundary_ratio=0.875, device="meta")  # two experts
    with pytest.raises(UnsupportedCombination, match="2 experts it would count each expert's calls"):
        make_cache("cachedit_dbcache").plan(model=wan22, sampler="flow_euler", nfe=10)
    from cache_dit.caching.block_adapters import BlockAdapterRegister

    # a family cache-dit has no adapter for (simulated: PixArt's taken out of its registry)
    monkeypatch.setattr(BlockAdapterRegister, "_adapters",
                        {k: v for k, v in BlockAdapterRegister._adapters.items() if k != "PixArt"})
    with pytest.raises(UnsupportedCombination, match="cache-dit has no block adapter for PixArtTransformer2DModel"):
        make_cache("cachedit_dbcache").plan(model=model, sampler="flow_euler", nfe=10)


def test_cachedit_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cache_dit", None)  # `import cache_dit` raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'l2c-bench\[cachedit\]'"):
        make_cache("cachedit_dbcache").plan(model=build_zoo("PixArtTransformer2DModel", device="meta"),
                                            sampler="flow_euler", nfe=10)


def test_a_cachedit_run_records_its_cached_steps_and_the_macs_of_what_ran(tmp_path, monkeypatch):
    from test_run import config

    from l2c_bench.run import run_point
    from l2c_bench.runs import prepare

    loaded = []  # the model the run loaded (its toy scale's configuration), for the MACs by hand
    load = prepare.load_model
    monkeypatch.setattr(prepare, "load_model", lambda *a, **k: loaded.append(load(*a, **k)) or loaded[-1])
    overrides = ("tracker=none", "model=diffusers", "model.diffusers_class=FluxTransformer2DModel",
                 "cache=cachedit_dbcache", "cache.residual_diff_threshold=0.3", "cache.max_warmup_steps=2", "steps=10")
    row = run_point(config(tmp_path, *overrides))
    assert row["status"] == "ok", row.get("error")
    m = {k.removeprefix("metrics."): v for k, v in row.items() if k.startswith("metrics.")}
    saved = torch.load(tmp_path / row["run_id"] / "schedule.pt")
    per_sample = saved["per_sample"]  # (samples, nfe, blocks, 2): each sample its batch's decisions
    batches = m["cachedit_cached_steps"]  # cache-dit's own, per batch run (sampling, then timing)
    assert batches and all(b == skipped(per_sample[0]) for b in batches[:1])
    assert all(skipped(s) in batches for s in per_sample)  # every sample's skips are a batch cache-dit reported
    assert skipped(per_sample[0]) and min(skipped(per_sample[0])) >= 2
    model = loaded[0][0]
    plan = make_cache("cachedit_dbcache", max_warmup_steps=2).plan(model=model, sampler="flow_euler", nfe=10)
    assert m["macs_g"] * 1e9 == pytest.approx(macs(model, saved["schedule"], nfe=10, plan=plan), rel=1e-12)
    assert m["macs_g"] < m["macs_uncached_g"]
    assert m["macs_speedup"] > 1 and m["host_sync_per_evaluation"]
    monkeypatch.setitem(sys.modules, "cache_dit", None)  # not installed: the point fails and says how to install it
    failed = run_point(config(tmp_path / "missing", *overrides))
    assert failed["status"] == "failed" and "pip install 'l2c-bench[cachedit]'" in failed["error"]


def test_cachedit_on_our_own_model_writes_an_unsupported_row_naming_why(tmp_path):
    from test_run import config

    from l2c_bench.run import run_point

    row = run_point(config(tmp_path, "tracker=none", "cache=cachedit_dbcache"))  # the toy DiT: ours
    assert row["status"] == "unsupported" and "runs on model=diffusers" in row["error"], row.get("error")
