"""LTX-Video (diffusers' `LTXVideoTransformer3DModel`, models/zoo/ltx.py) as a video model family:
exact against the bare transformer fed as diffusers' LTXPipeline feeds it, reused tensors handed
back as they were stored, exact MACs, what the methods that cannot run on it say, and a run's row."""

import math
from functools import partial

import pytest
import torch
from conftest import counted_macs, flow_kwargs

from l2c_bench import generate
from l2c_bench.caching import UnsupportedCombination, make_cache
from l2c_bench.engine.model import latent_shape
from l2c_bench.metrics.macs import macs
from l2c_bench.models.zoo import build_zoo

LTX = "LTXVideoTransformer3DModel"
NFE = 10


@pytest.fixture(scope="module")
def ltx():
    torch.manual_seed(0)
    return build_zoo(LTX).eval()


sample_kwargs = partial(flow_kwargs, NFE)


def test_the_adapter_is_the_bare_transformer_as_the_pipeline_calls_it_bit_for_bit(ltx):
    """LTXPipeline packs the latents with `_pack_latents` (patch 1 x 1), passes t in [0, 1000], the
    prompt mask and its rope interpolation scale (8 / 25 fps, 32, 32), and unpacks the output."""
    from diffusers import LTXPipeline

    model = ltx
    assert latent_shape(model) == (4, 3, 16, 16) and model.num_blocks == 4
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, *model.latent_shape, generator=g)
    y = torch.tensor([0, model.null_class])
    for time in (1000.0, 900.0, 250.0):
        t = torch.full((2,), time)
        with torch.no_grad():
            bare = model.transformer(LTXPipeline._pack_latents(x, 1, 1), encoder_hidden_states=model.bank(y)[0],
                                     timestep=t, encoder_attention_mask=None, num_frames=3, height=16, width=16,
                                     rope_interpolation_scale=(8 / 25, 32, 32)).sample
            assert torch.equal(model(x, t, y), LTXPipeline._unpack_latents(bare, 3, 16, 16, 1, 1))
    kw = sample_kwargs(labels=[1], seeds=[0], steps=4)
    assert torch.equal(generate(model, **kw).latents, generate(model, cache=make_cache("fora", interval=1), **kw).latents)


def test_a_cached_step_hands_back_exactly_the_stored_tensors(ltx):
    """FORA at interval 2: at a cache step each branch module's output is the very tensor of the
    step before (a reference, never a copy), and no self-attention projects its queries."""
    model = ltx
    seen, handles = {}, []
    for b, block in enumerate(model.blocks):
        for attr in ("attn1", "attn2", "ff"):
            handles.append(getattr(block, attr).register_forward_hook(
                lambda m, args, out, key=(b, attr): seen.setdefault(key, []).append(out)))
    queries = []
    handles += [block.attn1.to_q.register_forward_hook(lambda *a: queries.append(1)) for block in model.blocks]
    try:
        result = generate(model, cache=make_cache("fora"), **sample_kwargs(steps=4))
    finally:
        for h in handles:
            h.remove()
    assert result.plan.cache_steps == (1, 3)
    assert len(queries) == 2 * model.num_blocks
    assert len(seen) == 3 * model.num_blocks
    for outs in seen.values():
        assert len(outs) == 4
        assert outs[1] is outs[0] and outs[3] is outs[2] and outs[2] is not outs[0]


def test_the_macs_of_a_schedule_that_ran_are_exact(ltx):
    """MACs of FORA's realised schedule are the linear MACs the sampling call ran, per sample and
    guidance pass, as torch's FLOP counter counts them (on a CPU it counts no attention product)."""
    kw = sample_kwargs()
    result, ran = counted_macs(ltx, make_cache("fora"), kw)
    assert result.schedule.sum().item() == 2 * ltx.num_blocks * (NFE // 2)
    assert macs(ltx, result.schedule, nfe=NFE) == ran
    assert macs(ltx, None, nfe=NFE) > ran


def test_the_methods_ltx_cannot_run_say_why(ltx):
    """faster_diffusion needs an encoder/decoder split; diffusers' TaylorSeerCache looks for
    attention modules named `transformer_blocks.*attn`, and LTX's are `attn1` and `attn2`."""
    with pytest.raises(UnsupportedCombination, match="encoder/decoder split"):
        make_cache("faster_diffusion").plan(model=ltx, sampler="flow_euler", nfe=NFE)
    with pytest.raises(UnsupportedCombination, match="transformer_blocks"):
        make_cache("diffusers_taylorseer").plan(model=ltx, sampler="flow_euler", nfe=NFE)


@pytest.mark.parametrize("name,params", [("deepcache", {}), ("delta_dit", {}), ("taylorseer", {}), ("toca", {}),
                                         ("layer_drop", {}), ("fbcache", {"threshold": 10.0}),
                                         ("diffusers_fbcache", {"threshold": 10.0}), ("diffusers_pab", {}),
                                         ("diffusers_magcache", {}), ("diffusers_seacache", {}),
                                         ("teacache", {"coefficients": [0.0, 0.0, 0.0, 1.0, 0.0], "threshold": 10.0})])
def test_each_kind_of_reuse_runs_on_ltx(name, params, ltx):
    """diffusers' SeaCache reads the latents the transformer got: LTX's tokens unpacked to (C, F, H, W)."""
    result = generate(ltx, cache=make_cache(name, **params), **sample_kwargs(labels=[1], seeds=[0]))
    assert torch.isfinite(result.latents).all() and result.cached_ratio > 0


@pytest.mark.slow
def test_an_ltx_run_writes_an_ok_row_with_the_video_fields(tmp_path):
    from conftest import compose_config

    from l2c_bench.run import run_point

    cfg = compose_config(tmp_path, "model=diffusers", f"model.diffusers_class={LTX}", "cache=fora", "tracker=none",
                         "model.checkpoint=random", f"steps={NFE}", "metrics.num_samples=4", "metrics.batch_size=4", "metrics.timing_batch=1",
                         "metrics.timing_repeats=6", "metrics.timing_min_repeats=6", "metrics.interval_resamples=100")
    row = run_point(cfg)
    assert row["status"] == "ok", row.get("error")
    assert row["metrics.latent_shape"] == [4, 3, 16, 16]
    assert 1 < row["metrics.macs_speedup"] < NFE / 5 * 1.01
    assert 0 < row["metrics.paired_frame_psnr_db"] < math.inf and row["metrics.temporal_change_ratio"] > 0
    assert row.get("metrics.converged_frame_psnr_db") is None  # random weights: no converged reference


@pytest.mark.slow
def test_a_trained_ltx_run_is_scored_per_frame_against_the_converged_video(tmp_path):
    """The shipped LTX toy (checkpoint=toy, toy/assets/ltx_toy.pt): 8 x 8 pixel clips with the
    converged reference, its per-frame PSNR the headline quality."""
    from conftest import trained_video_row

    row = trained_video_row(tmp_path, LTX, NFE)
    assert row["metrics.latent_shape"] == [3, 3, 8, 8]


def test_ltxs_vae_is_refused_not_decoded_as_an_autoencoderkl(tmp_path):
    import json

    from l2c_bench.models.loading import RunConfigError, pipeline_vae_class

    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKLLTXVideo"}))
    with pytest.raises(RunConfigError, match="AutoencoderKLLTXVideo.*model.vae=none"):
        pipeline_vae_class(tmp_path)
