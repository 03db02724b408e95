"""FLUX.2 (diffusers' `Flux2Transformer2DModel`, models/zoo/flux2.py) as a model family: exact
against the bare transformer fed as diffusers' Flux2Pipeline feeds it, a span that crosses from
the double-stream into the single-stream blocks, reused tensors handed back as they were stored,
exact MACs, what the methods that cannot run on it say, and a run's row."""

import math
from functools import partial

import pytest
import torch
from conftest import counted_macs, flow_kwargs

from l2c_bench import generate
from l2c_bench.caching import UnsupportedCombination, make_cache
from l2c_bench.engine.model import ATTENTION, MLP, latent_shape
from l2c_bench.metrics.macs import macs
from l2c_bench.models.zoo import build_zoo

FLUX2 = "Flux2Transformer2DModel"
NFE = 10


@pytest.fixture(scope="module")
def flux2():
    torch.manual_seed(0)
    return build_zoo(FLUX2).eval()


sample_kwargs = partial(flow_kwargs, NFE)


def pipeline_call(model, x, t, y):
    """The bare transformer as diffusers' Flux2Pipeline calls it: its own patchify, packing and
    position ids (static methods of the pipeline), the timestep / 1000 and the raw guidance."""
    from diffusers import Flux2Pipeline

    text, _ = model.bank(y)  # (N, L, joint_attention_dim)
    patches = Flux2Pipeline._patchify_latents(x)  # (N, 4C, H/2, W/2)
    out = model.transformer(Flux2Pipeline._pack_latents(patches), encoder_hidden_states=text, timestep=t / 1000,
                            img_ids=Flux2Pipeline._prepare_latent_ids(patches),
                            txt_ids=Flux2Pipeline._prepare_text_ids(text),
                            guidance=torch.full((x.shape[0],), model.args.guidance)).sample
    n, c, h, w = patches.shape
    return Flux2Pipeline._unpatchify_latents(out.transpose(1, 2).reshape(n, c, h, w))


def test_the_adapter_is_the_bare_transformer_as_the_pipeline_calls_it_bit_for_bit(flux2):
    model = flux2
    assert latent_shape(model) == (4, 16, 16) and model.num_blocks == 4  # 2 double-stream + 2 single-stream
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 16, 16, generator=g)
    y = torch.tensor([0, model.null_class])
    for time in (1000.0, 900.0, 250.0):
        t = torch.full((2,), time)
        with torch.no_grad():
            assert torch.equal(model(x, t, y), pipeline_call(model, x, t, y))
    kw = sample_kwargs(labels=[1], seeds=[0], steps=4)
    assert torch.equal(generate(model, **kw).latents, generate(model, cache=make_cache("fora", interval=1), **kw).latents)


def test_a_span_across_the_two_kinds_of_blocks_computes_what_the_transformer_does(flux2):
    """FBCache's span is blocks 1..3: double-stream block 1, then the single-stream blocks, which
    the transformer calls with the streams concatenated. At threshold 0 it never reuses: the span
    run block by block by our hook must equal the transformer's own loop, bit for bit, and the
    single-stream blocks must run inside the span (with the transformer's own keywords)."""
    model = flux2
    inside = []
    handles = [block.register_forward_pre_hook(
        lambda m, args, kwargs: inside.append((model.inside_span, kwargs["encoder_hidden_states"] is None)),
        with_kwargs=True) for block in model.transformer.single_transformer_blocks]
    try:
        cached = generate(model, cache=make_cache("fbcache", threshold=0.0), **sample_kwargs())
    finally:
        for h in handles:
            h.remove()
    assert cached.cached_ratio == 0.0
    assert torch.equal(cached.latents, generate(model, **sample_kwargs()).latents)
    # per step, the two single-stream blocks ran in the span (inside_span) with single-stream keywords,
    # and the transformer's own calls to them (after the span) returned its output untouched
    assert inside.count((True, True)) == 2 * NFE and inside.count((False, True)) == 2 * NFE


def test_a_cached_step_hands_back_exactly_the_stored_tensors(flux2):
    """FORA at interval 2: at a cache step each branch module's output is the very tensor of the
    step before (a reference, never a copy), and no attention projects its queries."""
    model = flux2
    seen, handles = {}, []
    for b, block in enumerate(model.blocks):
        for attr, *_ in model.branch_modules(b):
            handles.append(getattr(block, attr).register_forward_hook(
                lambda m, args, out, key=(b, attr): seen.setdefault(key, []).append(out)))
    fused = []  # the single-stream blocks' fused QKV + MLP input projection
    handles += [block.attn.to_qkv_mlp_proj.register_forward_hook(lambda *a: fused.append(1))
                for block in model.transformer.single_transformer_blocks]
    try:
        result = generate(model, cache=make_cache("fora"), **sample_kwargs(steps=4))
    finally:
        for h in handles:
            h.remove()
    assert result.plan.cache_steps == (1, 3)
    assert len(fused) == 2 * 2  # two single-stream blocks at steps 0 and 2 only
    assert len(seen) == 2 * 3 + 2 * 1  # double: attn, ff, ff_context; single: attn
    for key, outs in seen.items():
        assert len(outs) == 4, key
        parts = [o if isinstance(o, tuple) else (o,) for o in outs]
        for i in range(len(parts[0])):  # the joint attention's image and text outputs alike
            assert parts[1][i] is parts[0][i] and parts[3][i] is parts[2][i] and parts[2][i] is not parts[0][i]


def test_a_hooked_plan_counts_the_fused_mlp_of_a_single_stream_block_with_its_attention(flux2):
    """diffusers' PAB reuses attention only; its realised schedule is what ran. A single-stream
    block's MLP runs inside its fused `attn`: its MLP column is that attention's column."""
    result = generate(flux2, cache=make_cache("diffusers_pab"), **sample_kwargs(labels=[1], seeds=[0]))
    schedule = result.schedule  # (NFE, blocks, 2)
    assert torch.equal(schedule[:, 2:, MLP], schedule[:, 2:, ATTENTION])
    assert schedule[:, :2, MLP].all()  # the double-stream blocks' feed-forwards always run under PAB
    assert not schedule[:, :, ATTENTION].all()  # and PAB did reuse some attention


def test_the_macs_of_a_schedule_that_ran_are_exact(flux2):
    """MACs of FORA's realised schedule are the linear MACs the sampling call ran, per sample and
    guidance pass, as torch's FLOP counter counts them (on a CPU it counts no attention product)."""
    kw = sample_kwargs()
    result, ran = counted_macs(flux2, make_cache("fora"), kw)
    assert result.schedule.sum().item() == 2 * flux2.num_blocks * (NFE // 2)
    assert macs(flux2, result.schedule, nfe=NFE) == ran
    assert macs(flux2, None, nfe=NFE) > ran


def test_the_methods_flux2_cannot_run_say_why(flux2):
    """faster_diffusion needs an encoder/decoder split; diffusers' FirstBlockCache and SeaCache
    subtract the first block's output from the last's, and FLUX.2's first block returns two
    streams while its last returns them concatenated (FirstBlockCache would raise a TypeError,
    SeaCache fall open)."""
    with pytest.raises(UnsupportedCombination, match="encoder/decoder split"):
        make_cache("faster_diffusion").plan(model=flux2, sampler="flow_euler", nfe=NFE)
    for name in ("diffusers_fbcache", "diffusers_seacache"):
        with pytest.raises(UnsupportedCombination, match="concatenated in one tensor"):
            make_cache(name).plan(model=flux2, sampler="flow_euler", nfe=NFE)


@pytest.mark.parametrize("name,params", [("deepcache", {}), ("delta_dit", {}), ("taylorseer", {}), ("toca", {}),
                                         ("layer_drop", {}), ("diffusers_magcache", {}), ("diffusers_taylorseer", {}),
                                         ("teacache", {"coefficients": [0.0, 0.0, 0.0, 1.0, 0.0], "threshold": 10.0})])
def test_each_kind_of_reuse_runs_on_flux2(name, params, flux2):
    result = generate(flux2, cache=make_cache(name, **params), **sample_kwargs(labels=[1], seeds=[0]))
    assert torch.isfinite(result.latents).all() and result.cached_ratio > 0


def test_a_local_pretrained_folder_loads_without_download(tmp_path, flux2):
    """Paper scale: a from_pretrained folder (here the toy's save_pretrained; FLUX.2-dev's would be
    the hub repo downloaded beforehand) is read locally, and a run plans on the folder's own
    configuration (its blocks) before loading any weight."""
    from test_config import compose_config

    from l2c_bench.models.loading import build_configured
    from l2c_bench.runs.prepare import describe

    flux2.transformer.save_pretrained(tmp_path / "transformer")
    loaded = build_zoo(FLUX2, pretrained=tmp_path, sample_size=16).eval()
    x, t, y = torch.randn(2, 4, 16, 16), torch.tensor([900.0, 250.0]), torch.tensor([1, flux2.null_class])
    with torch.no_grad():
        assert torch.equal(loaded(x, t, y), flux2(x, t, y))
    small = build_zoo(FLUX2, config={**flux2.transformer.config, "num_single_layers": 1})
    small.transformer.save_pretrained(tmp_path / "small")
    cfg = compose_config("scale=paper", "model=diffusers", f"model.diffusers_class={FLUX2}",
                         f"model.pretrained={tmp_path / 'small'}", "+model.zoo.sample_size=16")
    assert (cfg.model.family, cfg.model.default_sampler) == ("flow", "flow_euler")
    assert build_configured(describe(cfg).model, device="meta").num_blocks == 3


@pytest.mark.slow
def test_a_flux2_run_writes_an_ok_row(tmp_path):
    from conftest import compose_config

    from l2c_bench.run import run_point

    # the seeded random toy configuration (latents 4 x 16 x 16), not the trained pixel-space toy weights
    cfg = compose_config(tmp_path, "model=diffusers", f"model.diffusers_class={FLUX2}", "model.checkpoint=random",
                         "cache=fora", "tracker=none", f"steps={NFE}", "metrics.num_samples=4", "metrics.batch_size=4",
                         "metrics.timing_batch=1", "metrics.timing_repeats=6", "metrics.timing_min_repeats=6", "metrics.interval_resamples=100")
    row = run_point(cfg)
    assert row["status"] == "ok", row.get("error")
    assert row["metrics.latent_shape"] == [4, 16, 16]
    assert 1 < row["metrics.macs_speedup"] < NFE / 5 * 1.01  # FORA computes 5 of 10 steps' blocks
    assert row["metrics.cached_ratio"] == pytest.approx(1.0)
    assert 0 < row["metrics.paired_image_psnr_db"] < math.inf and row["metrics.paired_latent_psnr_db"] < math.inf


def test_flux2s_vae_is_refused_not_decoded_as_an_autoencoderkl(tmp_path):
    """FLUX.2's pipeline patchifies its latents and undoes the VAE's batch-norm statistics before
    decoding; loading its AutoencoderKLFlux2 as a plain AutoencoderKL would decode wrongly."""
    import json

    from l2c_bench.models.loading import RunConfigError, pipeline_vae_class

    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKLFlux2"}))
    with pytest.raises(RunConfigError, match="AutoencoderKLFlux2.*model.vae=none"):
        pipeline_vae_class(tmp_path)
