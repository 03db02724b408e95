"""Wan 2.1 and Wan 2.2 (diffusers' `WanTransformer3DModel`, models/zoo/wan.py) as model families:
exact against the bare transformer and diffusers' own WanPipeline, the expert switch at diffusers'
boundary rule, caches restarted at the switch with the sampler's step count, exact MACs, the video
metrics, and a run's row."""

import math
from functools import partial
from types import SimpleNamespace

import pytest
import torch
from conftest import counted_macs, flow_kwargs

from l2c_bench import generate
from l2c_bench.caching import UnsupportedCombination, make_cache
from l2c_bench.engine import FixedPlan, Forecast, Plan
from l2c_bench.engine.model import ATTENTION, latent_shape
from l2c_bench.metrics.frames import as_frames, filmstrip, frame_psnr, temporal_change
from l2c_bench.metrics.macs import macs
from l2c_bench.metrics.registry import METRICS, Batch
from l2c_bench.models.zoo import build_zoo
from l2c_bench.models.zoo.wan import flow_timesteps
from l2c_bench.sampling import FlowEulerSteps

WAN = "WanTransformer3DModel"
BOUNDARY = 0.875  # Wan 2.2 T2V A14B's boundary_ratio
NFE = 10  # flow_euler, shift 3: t = 1000, 960, 913 (high-noise expert), then 858, ... (low-noise)
SWITCH = 3  # the low-noise expert's first step at NFE 10 (diffusers' pipeline agrees: below)


@pytest.fixture(scope="module")
def wan21():
    torch.manual_seed(0)
    return build_zoo(WAN).eval()


@pytest.fixture(scope="module")
def wan22():
    torch.manual_seed(0)
    return build_zoo(WAN, boundary_ratio=BOUNDARY, guidance_2=3.0).eval()


sample_kwargs = partial(flow_kwargs, NFE)


def record_experts(model):
    """A list that gets, per transformer call, which expert ran (1 or 2), and the hook handles."""
    calls = []
    handles = [expert.register_forward_pre_hook(lambda *a, i=i: calls.append(i)) for i, expert in
               enumerate(model.experts, start=1)]
    return calls, handles


def branch_outputs(model):
    """Per (expert, block, branch module) the list of its outputs, one per call, and the handles:
    what the block received from the module (computed or handed back by our hook)."""
    seen: dict = {}
    handles = []
    for e, expert in enumerate(model.experts, start=1):
        for b, block in enumerate(expert.blocks):
            for attr in ("attn1", "attn2", "ffn"):
                handles.append(getattr(block, attr).register_forward_hook(
                    lambda m, args, out, key=(e, b, attr): seen.setdefault(key, []).append(out)))
    return seen, handles


def remove(handles):
    for h in handles:
        h.remove()


# -- the adapter against diffusers ------------------------------------------------------------


@pytest.mark.parametrize("two_experts", [False, True])
def test_the_adapter_is_the_bare_transformer_bit_for_bit(two_experts, wan21, wan22):
    """Without a cache the adapter computes exactly what the bare transformer (the expert diffusers'
    rule picks) computes; so does a plan computing everything, through our hooks."""
    model = wan22 if two_experts else wan21
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, *model.latent_shape, generator=g)
    y = torch.tensor([0, model.null_class])
    assert model.latent_shape == (4, 3, 16, 16) == latent_shape(model)
    for time, expert in ((900.0, 0), (875.0, 0), (874.9, 1), (250.0, 1)):
        t = torch.full((2,), time)
        with torch.no_grad():
            bare = model.experts[expert if two_experts else 0](x, timestep=t, encoder_hidden_states=model.bank(y)[0]).sample
            assert torch.equal(model(x, t, y), bare)
    kw = sample_kwargs(labels=[1], seeds=[0], steps=4)
    assert torch.equal(generate(model, **kw).latents, generate(model, cache=make_cache("fora", interval=1), **kw).latents)
    assert two_experts == (len(model.experts) == 2)
    if two_experts:  # the experts' weights differ: switching matters
        assert not torch.equal(model.experts[0].proj_out.weight, model.experts[1].proj_out.weight)


def test_sampling_is_diffusers_wan_pipeline_with_its_expert_switch(wan22):
    """Our flow_euler sampler with CFG (w, and w2 for the low-noise expert) against diffusers'
    WanPipeline with the same scheduler (FlowMatchEuler, shift 3), latents and prompt embeddings:
    the same transformer at every step, and the same samples (our halves run as one batch of 2N,
    the pipeline's one by one: float rounding only)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    model = wan22
    x_T = torch.randn(1, *model.latent_shape, generator=torch.Generator().manual_seed(0))
    calls, handles = record_experts(model)
    try:
        ours = generate(model, labels=[2], seeds=[0], steps=NFE, sampler="flow_euler", guidance_scale=2.0).latents
        our_experts = calls[:]
        calls.clear()
        pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=model.transformer,
                           transformer_2=model.transformer_2, boundary_ratio=BOUNDARY,
                           scheduler=FlowMatchEulerDiscreteScheduler(shift=model.flow_shift))
        pipe.set_progress_bar_config(disable=True)
        frames = 4 * (model.latent_shape[1] - 1) + 1  # the VAE's 4x temporal compression, first frame alone
        with torch.no_grad():
            theirs = pipe(prompt_embeds=model.bank.embeddings[2:3], negative_prompt_embeds=model.bank.embeddings[-1:],
                          num_frames=frames, height=8 * 16, width=8 * 16, num_inference_steps=NFE, guidance_scale=2.0,
                          guidance_scale_2=3.0, latents=x_T.clone(), output_type="latent").frames
        their_experts = calls[::2]  # the pipeline calls each expert twice per step (cond, uncond)
    finally:
        remove(handles)
    assert torch.equal(x_T[0], torch.randn(model.latent_shape, generator=torch.Generator().manual_seed(0)))
    assert our_experts == their_experts == [1] * SWITCH + [2] * (NFE - SWITCH)
    assert theirs.shape == ours.shape and (theirs - ours).abs().max() < 1e-4
    # the second expert's own scale matters: with w2 = w the samples move
    model.guidance_scale_2 = None  # both experts at w
    try:
        same = generate(model, labels=[2], seeds=[0], steps=NFE, sampler="flow_euler", guidance_scale=2.0).latents
    finally:
        model.guidance_scale_2 = 3.0
    assert not torch.allclose(same, ours, atol=1e-3)


@pytest.mark.parametrize("nfe", [4, 10, 20, 50])
def test_the_switch_step_follows_diffusers_rule(nfe, wan22):
    """diffusers' WanPipeline: boundary_timestep = boundary_ratio * num_train_timesteps; a step with
    t >= boundary runs `transformer`, the rest `transformer_2`. Our switch (the plans' restart) is
    the first step of the sampler's own timesteps below it."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(nfe)
    assert torch.equal(FlowEulerSteps(nfe, 3.0, "cpu").timesteps, flow_timesteps("flow_euler", nfe, 3.0))  # generate's
    model = wan22
    try:
        for ratio in (0.5, 0.875, 0.9, 0.99):
            boundary = ratio * scheduler.config.num_train_timesteps
            expected = [i for i, t in enumerate(scheduler.timesteps) if not t >= boundary][:1]  # the rule, verbatim
            model.boundary = ratio * 1000
            assert list(model.expert_switches("flow_euler", nfe)) == expected, ratio
    finally:
        model.boundary = BOUNDARY * 1000
    assert wan22.expert_switches("flow_euler", NFE) == (SWITCH,)


# -- caches at the switch ---------------------------------------------------------------------


def test_a_cached_step_hands_back_exactly_the_stored_tensors(wan21):
    """FORA at interval 2: at a cache step each branch module's output is the very tensor of the
    step before (a reference, never a copy), and no attention module computes."""
    model = wan21
    seen, handles = branch_outputs(model)
    queries = []
    handles += [block.attn1.to_q.register_forward_hook(lambda *a: queries.append(1)) for block in model.blocks]
    try:
        result = generate(model, cache=make_cache("fora"), **sample_kwargs(steps=4))
    finally:
        remove(handles)
    assert result.plan.cache_steps == (1, 3)
    assert len(queries) == 2 * model.num_blocks  # the self-attention projected its queries at steps 0 and 2 only
    for outs in seen.values():
        assert len(outs) == 4
        assert outs[1] is outs[0] and outs[3] is outs[2] and outs[2] is not outs[0]


def restart_check(model, cache):
    """Sample with `cache` on Wan 2.2 recording each branch output and each evaluation's (x, t, out):
    (expert-2 outputs at the switch that are expert-1 tensors, |out - uncached out| at the switch)."""
    seen, handles = branch_outputs(model)
    evaluations = []
    forward = model.forward

    def recording(x, t, y, runner=None):
        out = forward(x, t, y, runner)
        evaluations.append((x, t, y, out))
        return out

    model.forward = recording
    try:
        result = generate(model, cache=cache, **sample_kwargs())
    finally:
        remove(handles)
        del model.forward
    first = {k: v for k, v in seen.items() if k[0] == 1}
    expert1 = {id(o) for outs in first.values() for o in outs}
    at_switch = [outs[0] for key, outs in seen.items() if key[0] == 2]  # expert 2's first call: the switch
    reused = sum(id(o) in expert1 for o in at_switch)
    x, t, y, out = evaluations[SWITCH]
    with torch.no_grad():
        error = (model(x, t, y) - out).abs().max().item()
    return result, reused, error


def test_no_tensor_of_the_high_noise_expert_is_reused_by_the_low_noise_expert(wan22):
    """FORA at interval 2 plans a reuse at step 3, the low-noise expert's first: the plan restarts
    there, so every branch computes, expert 2's modules hand back none of expert 1's tensors, and
    the evaluation equals the uncached one bit for bit. Without the restart (the same method on a
    model that declares no switch) the same check fails: it would have caught the reuse."""
    model = wan22
    result, reused, error = restart_check(model, make_cache("fora"))
    assert SWITCH in make_cache("fora").plan(model=model, sampler="flow_euler", nfe=NFE).cache_steps
    assert result.plan.restarts == (SWITCH,) and result.schedule[SWITCH].all()
    assert not result.schedule[SWITCH + 2].any()  # the cache steps after it reuse as planned
    assert reused == 0 and error == 0.0
    model.expert_switches = lambda sampler, nfe: ()  # no restart: the engine reuses across experts
    try:
        result, reused, error = restart_check(model, make_cache("fora"))
    finally:
        del model.expert_switches
    assert result.plan.restarts == () and not result.schedule[SWITCH].any()
    assert reused == 3 * model.num_blocks and error > 1e-3


def test_an_l2c_router_indexes_the_samplers_steps_and_restarts_at_the_switch(wan22, tmp_path):
    """A router (one row per sampler step) that reuses every branch at every cache step: its cache
    steps are 1, 3, 5, 7, 9 on the sampler's steps, and step 3, the low-noise expert's first, computes
    with nothing of the high-noise expert's read; the other cache steps reuse every branch."""
    from l2c_bench.caching.methods.l2c.router import save_router

    router = tmp_path / "router.pt"
    save_router(torch.full((NFE, 2 * wan22.num_blocks), -10.0), router)  # reuse everything
    l2c = make_cache("l2c", router=str(router), threshold=0.5)
    result, reused, error = restart_check(wan22, l2c)
    assert result.plan.cache_steps == (1, 3, 5, 7, 9) and result.plan.restarts == (SWITCH,)
    assert [bool(result.schedule[n].any()) for n in range(NFE)] == [n % 2 == 0 or n == SWITCH for n in range(NFE)]
    assert reused == 0 and error == 0.0


class StepSpy:
    """A forecast rule recording the step index each branch update (a computation) and forecast sees."""

    def __init__(self):
        self.updates, self.forecasts = [], []

    def update(self, previous, out, n):
        self.updates.append((n, previous is None))
        return n, out

    def predict(self, state, n):
        self.forecasts.append((n, state[0]))
        return state[1]


def test_methods_count_the_samplers_steps_across_the_switch(wan22):
    """The step index a method sees is the sampler's: a forecast rule gets 0..NFE-1 across the
    switch (never the low-noise expert's own call count, 0.. again), starts from no state at the
    switch and forecasts only from states of the same expert; FBCache's policy starts again there
    (no reference to compare with: computes) and decides with the sampler's step."""
    model = wan22
    spy = StepSpy()
    blocks = model.num_blocks
    compute = tuple(((n % 2 == 0,) * 2,) * blocks for n in range(NFE))
    plan = Plan(compute, tuple(range(1, NFE, 2)), rule=Forecast(spy))
    calls, handles = record_experts(model)
    try:
        result = generate(model, cache=FixedPlan(plan, "spy"), **sample_kwargs())
    finally:
        remove(handles)
    assert calls == [1] * SWITCH + [2] * (NFE - SWITCH)  # one batched call per step
    branches = blocks * 2 + blocks  # per evaluation: attn1 and attn2 parts, and the MLP
    steps = sorted({n for n, _ in spy.updates} | {n for n, _ in spy.forecasts})
    assert steps == list(range(NFE))
    assert [n for n, _ in spy.updates] == [n for n in (0, 2, 3, 4, 6, 8) for _ in range(branches)]
    assert all(fresh == (n in (0, SWITCH)) for n, fresh in spy.updates)
    assert [n for n, _ in spy.forecasts] == [n for n in (1, 5, 7, 9) for _ in range(branches)]
    assert all((n < SWITCH) == (source < SWITCH) for n, source in spy.forecasts)  # never across experts
    assert result.plan.cached_ratio == pytest.approx(0.8)  # step 3 was to forecast; it computed

    seen = []
    fb = make_cache("fbcache", threshold=10.0)  # reuse whenever allowed
    decide = type(fb.plan(model=model, sampler="flow_euler", nfe=NFE).policy).decide

    def spying(self, state, probe, allowed, n, nfe):
        seen.append((n, state["ref"] is None))
        return decide(self, state, probe, allowed, n, nfe)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(fb.plan(model=model, sampler="flow_euler", nfe=NFE).policy), "decide", spying)
        result = generate(model, cache=fb, **sample_kwargs())
    assert [n for n, _ in seen] == list(range(NFE))
    assert [n for n, empty in seen if empty] == [0, SWITCH]
    decisions = result.realised[0]["decisions"]
    assert decisions[0] is False and decisions[SWITCH] is False and all(decisions[n] for n in (1, 2, 4, 5))


@pytest.mark.parametrize("name,params", [("fora", {}), ("taylorseer", {}), ("toca", {}), ("deepcache", {}),
                                         ("delta_dit", {}), ("heuristic", {}), ("layer_drop", {}),
                                         ("fbcache", {"threshold": 10.0}), ("diffusers_fbcache", {"threshold": 10.0}),
                                         ("teacache", {"coefficients": [0.0, 0.0, 0.0, 1.0, 0.0], "threshold": 10.0})])
def test_each_method_runs_on_wan22_and_restarts_at_the_switch(name, params, wan22):
    """Every kind of reuse on two experts: finite samples, and at the switch every branch computes
    (a store-reading rule) or, for layer dropout (nothing stored), the plan's own drops."""
    result = generate(wan22, cache=make_cache(name, **params), **sample_kwargs(labels=[1], seeds=[0]))
    assert torch.isfinite(result.latents).all()
    schedule = result.schedule
    assert schedule[SWITCH].all() != (name == "layer_drop")
    assert result.cached_ratio > 0


def test_teacache_calibrates_on_steps_of_one_expert(wan22):
    """TeaCache's calibration fits output change against its indicator over consecutive steps; at
    the switch the change is of the model, not of the trajectory: that pair is left out."""
    from l2c_bench.caching.methods.teacache.calibration import calibrate

    content = calibrate(wan22, sampler="flow_euler", nfe=NFE, guidance_scale=2.0, samples=1)
    assert len(content["x"]) == len(content["y"]) == NFE - 2  # steps 1..9 but the switch
    assert all(v > 0 for v in content["x"]) and all(math.isfinite(c) for c in content["coefficients"])


def test_video_settings_that_cannot_work_fail_before_compute(tmp_path):
    """A video class given a prompt set whose prompts name images (FID's reference set, which no
    video row scores) fails in validate, naming why; the same prompts without images run. Latents
    whose frames or sides do not divide by the patch fail where the model is built."""
    from conftest import compose_config
    from PIL import Image

    from l2c_bench.models.loading import RunConfigError
    from l2c_bench.runs.prepare import validate

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "with.jsonl").write_text('{"prompt": "stripes", "image": "a.png"}\n')
    (tmp_path / "without.jsonl").write_text('{"prompt": "stripes"}\n')

    def config(prompts):
        return compose_config(tmp_path, "model=diffusers", f"model.diffusers_class={WAN}", "model.checkpoint=random", "cache=none",
                              f"model.prompt_set={tmp_path / prompts}")

    with pytest.raises(RunConfigError, match="names reference images, and WanTransformer3DModel makes videos"):
        validate(config("with.jsonl"))
    validate(config("without.jsonl"))
    with pytest.raises(ValueError, match=r"must divide by its patch \(1, 2, 2\): set model.zoo.frames, model.zoo.sample_size"):
        build_zoo(WAN, sample_size=15)


def test_the_methods_a_video_class_cannot_run_say_why(wan21, wan22):
    """faster_diffusion needs an encoder/decoder split, diffusers' TaylorSeerCache finds no attention
    named `transformer_blocks.*attn`; on two experts diffusers' PAB and MagCache would count each
    expert's calls, not the sampler's steps (diffusers issue #14025)."""
    for model in (wan21, wan22):
        with pytest.raises(UnsupportedCombination, match="encoder/decoder split"):
            make_cache("faster_diffusion").plan(model=model, sampler="flow_euler", nfe=NFE)
        with pytest.raises(UnsupportedCombination, match="transformer_blocks"):
            make_cache("diffusers_taylorseer").plan(model=model, sampler="flow_euler", nfe=NFE)
    make_cache("diffusers_pab").plan(model=wan21, sampler="flow_euler", nfe=NFE)
    for name in ("diffusers_pab", "diffusers_magcache"):
        with pytest.raises(UnsupportedCombination, match="14025"):
            make_cache(name).plan(model=wan22, sampler="flow_euler", nfe=NFE)


def test_the_macs_of_a_schedule_that_ran_are_exact(wan22):
    """MACs of FORA's realised schedule on two experts (the switch step computed) are the linear and
    conv MACs the sampling call ran, per sample and guidance pass, as torch's FLOP counter counts
    them (on a CPU it counts no attention product: the paper's linear count)."""
    kw = sample_kwargs()
    result, ran = counted_macs(wan22, make_cache("fora"), kw)
    assert result.schedule.sum().item() == 2 * wan22.num_blocks * (NFE // 2 + 1)  # 6 full steps: 0, 2, 3, 4, 6, 8
    assert macs(wan22, result.schedule, nfe=NFE) == ran
    assert macs(wan22, None, nfe=NFE) > ran


# -- video metrics ----------------------------------------------------------------------------


def test_frame_psnr_and_temporal_change_by_hand():
    video = torch.zeros(2, 1, 3, 2, 2)
    twin = video.clone()
    twin[0, :, 0] = 0.2  # sample 0: frame 0 off by 0.2 everywhere, frames 1 and 2 exact
    twin[1] = 0.1  # sample 1: every frame off by 0.1
    psnr = frame_psnr(video, twin)
    assert psnr[0] == math.inf  # an exact frame: inf, and the mean with it
    assert psnr[1].item() == pytest.approx(10 * math.log10(4 / 0.01))
    moving = torch.arange(3.0).view(1, 1, 3, 1, 1).expand(2, 1, 3, 2, 2) * torch.tensor([1.0, 0.5]).view(2, 1, 1, 1, 1)
    assert temporal_change(moving).tolist() == [1.0, 0.5]
    assert as_frames(moving)[:3, 0, 0, 0].tolist() == [0.0, 1.0, 2.0]  # sample 0's frames first
    assert filmstrip(moving)[1, 0, 0].tolist() == [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]


def video_batch(images, twin, model=None):
    point = SimpleNamespace(device=torch.device("cpu"), model=model, lpips=None)
    return Batch(point=point, kwargs={}, index=torch.arange(len(images)), result=None, images=images,
                 fetch=lambda kind: (None, twin) if kind == "uncached" else None)


def test_video_metrics_are_per_frame_and_skip_images():
    from l2c_bench.metrics.perceptual import ssim_per_sample

    g = torch.Generator().manual_seed(0)
    twin = torch.rand(2, 3, 4, 16, 16, generator=g) * 2 - 1
    video = (twin + 0.05 * torch.randn(twin.shape, generator=g)).clamp(-1, 1)
    video[1, :, 1:] = video[1, :, :1]  # sample 1 freezes after its first frame
    batch = video_batch(video, twin)
    psnr = METRICS["paired_frame_psnr_db"].score(batch)
    assert torch.allclose(psnr, frame_psnr(video, twin))
    ratio = METRICS["temporal_change_ratio"].score(batch)
    assert ratio[0].item() == pytest.approx(temporal_change(video[:1]).item() / temporal_change(twin[:1]).item())
    assert ratio[1] == 0.0  # frozen: no change between its frames
    ssim = METRICS["paired_image_ssim"].score(batch)  # each frame an image, averaged per video
    by_frame = torch.stack([ssim_per_sample(video[:, :, f], twin[:, :, f]) for f in range(4)], 1).mean(1)
    assert torch.allclose(ssim, by_frame, atol=1e-6) and ssim[0] < 1
    images = video_batch(video[:, :, 0], twin[:, :, 0])  # an image model's batch: no video metric
    assert METRICS["paired_frame_psnr_db"].score(images) is None and METRICS["temporal_change_ratio"].score(images) is None


@pytest.mark.slow
def test_a_wan22_run_writes_a_row_with_the_video_fields(tmp_path):
    from conftest import compose_config

    from l2c_bench.run import run_point

    cfg = compose_config(tmp_path, "model=diffusers", f"model.diffusers_class={WAN}", "cache=fora", "tracker=none",
                         "model.checkpoint=random", f"+model.zoo.boundary_ratio={BOUNDARY}", "+model.zoo.guidance_2=3.0",
                         f"steps={NFE}",
                         "metrics.num_samples=4", "metrics.batch_size=4", "metrics.timing_batch=1",
                         "metrics.timing_repeats=6", "metrics.timing_min_repeats=6", "metrics.interval_resamples=100")
    row = run_point(cfg)
    assert row["status"] == "ok", row.get("error")
    assert row["metrics.latent_shape"] == [4, 3, 16, 16]
    assert 1 < row["metrics.macs_speedup"] < NFE / 6  # FORA computes 6 of 10 steps; the rest only outside the blocks
    assert 0 < row["metrics.paired_frame_psnr_db"] < math.inf and row["metrics.paired_frame_psnr_db_ci_low"] is not None
    assert row["metrics.temporal_change_ratio"] > 0 and "FID" in row["metrics.video_note"]
    assert row.get("metrics.fid") is None and row["metrics.cached_ratio"] == pytest.approx(0.8)
    assert (tmp_path / row["run_id"] / "samples.png").is_file()
    # random weights: no converged reference, the fidelity to the twin is the headline
    assert row.get("metrics.converged_frame_psnr_db") is None and row["metrics.converged_nfe"] == 0
    assert row["metrics.primary_quality"] == "paired_latent_psnr_db"


def test_the_converged_frame_psnr_is_per_frame_against_the_converged_video():
    g = torch.Generator().manual_seed(1)
    converged = torch.rand(2, 3, 3, 8, 8, generator=g) * 2 - 1
    video = (converged + 0.1 * torch.randn(converged.shape, generator=g)).clamp(-1, 1)
    point = SimpleNamespace(device=torch.device("cpu"), model=None, lpips=None)
    batch = Batch(point=point, kwargs={}, index=torch.arange(2), result=None, images=video,
                  fetch=lambda kind: (None, converged) if kind == "converged" else None)
    assert torch.equal(METRICS["converged_frame_psnr_db"].score(batch), frame_psnr(video, converged))
    assert METRICS["converged_frame_psnr_db"].score(video_batch(video, converged)) is None  # no converged reference
    images = Batch(point=point, kwargs={}, index=torch.arange(2), result=None, images=video[:, :, 0],
                   fetch=lambda kind: (None, converged[:, :, 0]))
    assert METRICS["converged_frame_psnr_db"].score(images) is None  # an image model's batch


@pytest.mark.slow
@pytest.mark.parametrize("expert_2", [False, True])
def test_a_trained_wan_run_is_scored_per_frame_against_the_converged_video(tmp_path, expert_2):
    """The shipped Wan toy (checkpoint=toy, toy/assets/wan_toy.pt; Wan 2.2: both experts from it):
    pixel-space clips with the converged reference, its per-frame PSNR the headline quality."""
    from conftest import trained_video_row

    row = trained_video_row(tmp_path, WAN, NFE, *([f"+model.zoo.boundary_ratio={BOUNDARY}"] if expert_2 else []))
    assert row["metrics.latent_shape"] == [3, 3, 32, 32]
    assert row["metrics.converged_image_ssim"] is not None and row.get("metrics.fid_vs_converged") is None
    assert "converged_frame_psnr_db" in row["metrics.video_note"]


def test_a_wan22_two_expert_run_composes_and_dropped_branches_are_zero_tensors(wan22):
    """`model.zoo.boundary_ratio` turns Wan 2.2's second expert on through Hydra; a dropped MLP
    is a zero tensor (Wan's block calls `.float()` on it)."""
    from conftest import compose_config

    from l2c_bench.models.loading import build_configured
    from l2c_bench.runs.prepare import describe

    run = describe(compose_config("/tmp/unused", "model=diffusers", f"model.diffusers_class={WAN}", "cache=fora",
                                  f"+model.zoo.boundary_ratio={BOUNDARY}"))
    assert (run.model.family, run.sampler.name) == ("flow", "flow_euler")
    model = build_configured(run.model)
    assert len(model.experts) == 2 and model.boundary == 875.0
    assert torch.equal(model.experts[0].proj_out.weight, build_configured(run.model).experts[0].proj_out.weight)
    hook = next(h for h in model.experts[0].blocks[0].ffn._diffusers_hook.hooks.values() if hasattr(h, "branch"))
    assert hook.zeros_when_dropped and hook.branch != ATTENTION


def test_a_wan22_pipeline_folder_loads_both_experts_its_boundary_and_its_video_vae(tmp_path, wan22):
    """Paper scale: a local WanPipeline folder (save_pretrained) gives the transformer, the
    low-noise expert from transformer_2/, the boundary_ratio its model_index.json records, and
    Wan's video VAE, which decodes (N, C, f, h, w) latents to (N, 3, 4(f - 1) + 1, 8h, 8w) videos
    after undoing its per-channel statistics. Nothing is downloaded."""
    from conftest import compose_config
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline

    from l2c_bench.models.loading import load_model
    from l2c_bench.pipeline import to_images
    from l2c_bench.runs.prepare import describe

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True], latents_mean=[0.5] * 4, latents_std=[2.0] * 4)
    WanPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=wan22.transformer,
                transformer_2=wan22.transformer_2, boundary_ratio=0.9,
                scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0)).save_pretrained(tmp_path / "wan")
    run = describe(compose_config(tmp_path, "scale=paper", "model=diffusers", f"model.diffusers_class={WAN}",
                                  f"model.pretrained={tmp_path / 'wan'}", "+model.zoo.frames=2",
                                  "+model.zoo.sample_size=4"))
    model, loaded_vae = load_model(run.model, torch.device("cpu"))
    assert model.boundary == 900.0 and model.latent_shape == (4, 2, 4, 4)
    for ours, theirs in zip(model.experts, wan22.experts, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values(),
                                                      strict=True))
    assert isinstance(loaded_vae, AutoencoderKLWan)
    z = torch.randn(1, 4, 2, 4, 4)
    with torch.no_grad():
        video = to_images(z, loaded_vae)
        direct = vae.decode(z * 2.0 + 0.5).sample.clamp(-1, 1)  # the pipeline's z / (1 / std) + mean
    assert video.shape == (1, 3, 5, 32, 32) and torch.equal(video, direct)
