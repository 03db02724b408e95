"""model=diffusers: diffusers transformers wrapped as model families of the engine
(`l2c_bench.models.zoo`), on their tiny random configurations and our toy DiT's weights."""

import pytest
import torch
from omegaconf import OmegaConf

from l2c_bench import generate
from l2c_bench.caching import make_cache
from l2c_bench.caching.methods.l2c.router import save_router
from l2c_bench.engine.core import CacheConfigError, CacheRun, FixedPlan, Plan, full_plan
from l2c_bench.engine.model import ATTENTION, MLP, PROBES, CacheableModel, latent_shape
from l2c_bench.metrics.macs import branch_macs, macs
from l2c_bench.models import build_model, load_checkpoint
from l2c_bench.models.loading import TOY_ASSETS
from l2c_bench.models.zoo import ADAPTERS, ZooConfigError, build_zoo, from_ours
from l2c_bench.runs.prepare import describe

CLASSES = list(ADAPTERS)
SAMPLER = {"dit": "ddim", "flow": "flow_euler"}


@pytest.fixture(scope="module")
def toy_dit():
    return load_checkpoint(build_model("DiT-toy"), TOY_ASSETS / "dit_toy.pt").eval()


@pytest.fixture(scope="module")
def zoo():
    torch.manual_seed(0)
    return {cls: build_zoo(cls).eval() for cls in CLASSES}


def inputs(model, n=2):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, *latent_shape(model), generator=g)  # video classes: (n, C, F, H, W)
    return x, torch.tensor([900.0, 250.0])[:n], torch.tensor([1, model.null_class])[:n]


def test_diffusers_dit_holding_our_weights_agrees_with_ours(toy_dit):
    """Same weights: forward within 1e-4 and DDIM-20 samples within 1e-3 under DiT's numerics;
    diffusers' own timestep frequencies (log-frequencies / (half - 1)) move the output visibly."""
    official, native = from_ours(toy_dit, official=True), from_ours(toy_dit)
    x, t, y = inputs(toy_dit)
    with torch.no_grad():
        ours = toy_dit(x, t, y)
        assert (official(x, t, y) - ours).abs().max() <= 1e-4
        assert (native(x, t, y) - ours).abs().max() > 1e-2  # the documented difference, not noise
    kw = dict(labels=[1, 2, 3, 4], seeds=[0, 1, 2, 3], steps=20, sampler="ddim", guidance_scale=1.5)
    a, b = generate(toy_dit, **kw).latents, generate(official, **kw).latents
    assert (a - b).abs().max() <= 1e-3
    # a cached run follows the same plan on both: same schedule, samples as close as uncached
    for name in ("deepcache",):  # a span method: the block hooks, not only the branch hooks
        ra, rb = generate(toy_dit, cache=make_cache(name), **kw), generate(official, cache=make_cache(name), **kw)
        assert torch.equal(ra.schedule, rb.schedule)
        assert (ra.latents - rb.latents).abs().max() <= 1e-3


def test_wrapped_dit_counts_the_same_branch_macs_as_ours(toy_dit):
    ours, theirs = branch_macs(toy_dit), branch_macs(from_ours(toy_dit))
    assert theirs.branch == ours.branch  # the same linears per attention and MLP branch
    # the rest differs by what diffusers runs more: one timestep embedder per block
    assert theirs.base > ours.base


@pytest.mark.parametrize("cls", CLASSES)
def test_each_wrapped_class_is_a_cacheable_model_exact_under_a_full_plan(cls, zoo):
    model = zoo[cls]
    assert isinstance(model, CacheableModel) and model.family in SAMPLER
    x, t, y = inputs(model)
    calls = []

    class Recording:
        def __init__(self, span=None):
            self.span, self.probes = span, {}

        def __call__(self, block, branch, fn, *args, part=0):
            calls.append((block, branch, part))
            return fn(*args)

        def run_span(self, h, fn, probe=None):
            self.probes = {kind: probe(kind) for kind in PROBES}
            return fn(h)

    with torch.no_grad():
        bare = model.call(x, t, y)  # the transformer without our runner: hooks pass through
        run = CacheRun(full_plan(1, model.num_blocks))
        assert torch.equal(model(x, t, y, run.begin_evaluation(1)[0]), bare)  # bit for bit
        assert torch.equal(model(x, t, y, Recording()), bare)
        blocks = sorted({c[0] for c in calls})
        assert blocks == list(range(model.num_blocks))
        for b in blocks:  # every block routes both branches
            assert {branch for block, branch, _ in calls if block == b} == {ATTENTION, MLP}
        calls.clear()
        span = Recording(span=(1, model.num_blocks))
        assert torch.equal(model(x, t, y, span), bare)
    assert {c[0] for c in calls} == set(range(model.num_blocks))  # the span's blocks still route
    for kind, value in span.probes.items():
        assert value.ndim == 3 and value.shape[0] == len(x), kind


@pytest.mark.parametrize("cls", CLASSES)
def test_a_reused_branch_skips_its_modules(cls, zoo):
    """Evaluation 1 reuses every attention branch: no attention module runs, and the output is
    what reusing the stored tensors gives (it differs from computing them)."""
    model = zoo[cls]
    blocks = model.num_blocks
    plan = Plan((((True, True),) * blocks, ((False, True),) * blocks), (1,))
    counted = []  # the attention modules' own work: their query projections (the module itself is
    # still called by its block, the hook answering instead of its forward)
    handles = [getattr(block, attr).to_q.register_forward_hook(lambda *a: counted.append(1))
               for i, block in enumerate(model.blocks) for attr, branch, _, _ in model.branch_modules(i)
               if branch == ATTENTION]
    x, t, y = inputs(model)
    try:
        with torch.no_grad():
            run = CacheRun(plan)
            model(x, t, y, run.begin_evaluation(1)[0])
            first = len(counted)
            reused = model(x, t.flip(0), y, run.begin_evaluation(1)[0])
            at_reuse = len(counted) - first
            fresh = model(x, t.flip(0), y)
    finally:
        for h in handles:
            h.remove()
    assert first >= blocks and at_reuse == 0  # all ran once, none at the reuse
    assert not torch.equal(reused, fresh)


@pytest.mark.parametrize("cls", CLASSES)
def test_methods_run_on_each_class_and_count_the_macs_that_ran(cls, zoo):
    model = zoo[cls]
    kw = dict(labels=[1, 2], seeds=[0, 1], steps=6, sampler=SAMPLER[model.family], guidance_scale=1.5)
    base = generate(model, **kw)
    full = macs(model, None, nfe=6)
    for name in ("fora", "deepcache", "taylorseer", "toca", "layer_drop", "fbcache"):
        result = generate(model, cache=make_cache(name), **kw)
        assert torch.isfinite(result.latents).all(), name
        ran = macs(model, result.schedule, nfe=6)
        if name == "fbcache":  # random weights: the first block's residual changes too much to reuse
            assert ran <= full
            continue
        assert result.cached_ratio > 0 and ran < full, name
        assert not torch.equal(result.latents, base.latents), name


def test_text_classes_use_prompt_embeddings_and_an_empty_prompt_for_guidance(zoo):
    model = zoo["PixArtTransformer2DModel"]
    assert model.num_classes == model.null_class == model.bank.prompts
    x, t, _ = inputs(model)
    with torch.no_grad():
        a = model(x, t, torch.tensor([0, 0]))
        b = model(x, t, torch.tensor([3, 3]))
    assert not torch.equal(a, b)  # the prompt conditions the output
    again = build_zoo("PixArtTransformer2DModel")
    assert torch.equal(again.bank.embeddings, model.bank.embeddings)  # seeded


def test_bad_input_is_a_clear_error(zoo, tmp_path):
    with pytest.raises(ZooConfigError, match="valid: DiTTransformer2DModel"):
        build_zoo("UNet2DConditionModel")
    with pytest.raises(ZooConfigError, match="no_such_key"):
        build_zoo("SD3Transformer2DModel", config={"no_such_key": 1})
    with pytest.raises(ZooConfigError, match="no config.json"):
        build_zoo("FluxTransformer2DModel", pretrained=tmp_path)
    model = zoo["SD3Transformer2DModel"]
    router = tmp_path / "router.pt"
    save_router(torch.zeros(6, 2 * 28), router)  # DiT-XL/2's shape
    with pytest.raises(CacheConfigError, match="a router is trained for one model"):
        make_cache("l2c", router=str(router)).checked_plan(model=model, sampler="flow_euler", nfe=12)
    # a plan for another block count is refused before any evaluation
    with pytest.raises(CacheConfigError, match="blocks"):
        generate(model, labels=[1], seeds=[0], steps=3, sampler="flow_euler", guidance_scale=1.0,
                 cache=FixedPlan(full_plan(3, model.num_blocks + 1), "fixed"))
    with pytest.raises(ValueError, match="works with dit models"):
        generate(model, labels=[1], seeds=[0], steps=4, sampler="ddim", guidance_scale=1.0)


def test_a_local_pretrained_folder_loads_without_download(tmp_path, zoo):
    from test_config import compose_config

    from l2c_bench.models.loading import build_configured

    model = zoo["FluxTransformer2DModel"]
    model.transformer.save_pretrained(tmp_path / "transformer")
    loaded = build_zoo("FluxTransformer2DModel", pretrained=tmp_path, sample_size=16).eval()
    x, t, y = inputs(model)
    with torch.no_grad():
        assert torch.equal(loaded(x, t, y), model(x, t, y))
    # a run plans on the folder's own configuration before loading any weight
    small = build_zoo("FluxTransformer2DModel", config={**model.transformer.config, "num_single_layers": 1})
    small.transformer.save_pretrained(tmp_path / "small")
    cfg = compose_config("scale=paper", "model=diffusers", "model.diffusers_class=FluxTransformer2DModel",
                         f"model.pretrained={tmp_path / 'small'}", "+model.zoo.sample_size=16")
    assert build_configured(describe(cfg).model, device="meta").num_blocks == 3


@pytest.mark.parametrize("cls,family,sampler", [("DiTTransformer2DModel", "dit", "ddim"),
                                                ("PixArtTransformer2DModel", "dit", "ddim"),
                                                ("SD3Transformer2DModel", "flow", "flow_euler"),
                                                ("FluxTransformer2DModel", "flow", "flow_euler")])
def test_model_diffusers_composes_with_the_family_and_sampler_of_its_class(cls, family, sampler):
    from test_config import compose_config

    from l2c_bench.records import run_id_for

    cfg = compose_config("model=diffusers", f"model.diffusers_class={cls}", "cache=fora")
    assert (cfg.model.family, cfg.model.default_sampler, cfg.model.arch) == (family, sampler, f"diffusers-{cls}")
    assert run_id_for(OmegaConf.to_container(cfg, resolve=True)).startswith(f"{family}-{sampler}-fora-")
    other = compose_config("model=diffusers", "model.diffusers_class=PixArtTransformer2DModel", "cache=fora")
    if cls != "PixArtTransformer2DModel":  # each class is its own run
        assert run_id_for(OmegaConf.to_container(cfg, resolve=True)) != \
            run_id_for(OmegaConf.to_container(other, resolve=True))


def test_the_configured_toy_dit_is_our_toy_dit_through_diffusers(toy_dit):
    from test_config import compose_config

    from l2c_bench.models.loading import load_model

    x, t, y = inputs(toy_dit)
    for official, bound in ((True, 1e-4), (False, None)):
        cfg = compose_config("model=diffusers", *(["+model.zoo.official=true"] if official else []))
        model, vae = load_model(describe(cfg).model, torch.device("cpu"))
        assert vae is None and type(model).__name__ == "DiTAdapter"
        with torch.no_grad():
            diff = (model(x, t, y) - toy_dit(x, t, y)).abs().max()
        assert diff <= bound if official else diff > 1e-2  # diffusers' own numerics by default


def test_flow_router_pairs_reach_the_cache_step_as_the_sampler_does(zoo):
    """FlowEulerPairs: from data on the straight path at the full step's sigma, the recorded full
    evaluation and the Euler steps after it land where flow_euler's own steps land."""
    from l2c_bench.caching.methods.l2c.learning.pairs import make_pairs
    from l2c_bench.caching.methods.l2c.learning.runners import Recorder

    model = zoo["SD3Transformer2DModel"]
    pairs = make_pairs("flow", "flow_euler", 8, torch.device("cpu"), interval=3, flow_shift=model.flow_shift)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, model.in_channels, model.input_size, model.input_size, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    labels = torch.tensor([1, 2])
    steps = pairs.steps
    for n, row in pairs.pairs:
        cache_step, distance = pairs.evaluation[row]  # the full step is `distance` evaluations before
        assert cache_step == n and distance in (1, 2)
        recorder = Recorder()
        x, t = pairs.prepare(model, x0, labels, noise, row, recorder)
        sigma = steps.sigmas[n - distance]
        expected = (1 - sigma) * x0 + sigma * noise
        with torch.no_grad():
            for k in range(n - distance, n):
                expected = expected + steps.deltas[k] * model(expected, steps.timesteps[k].expand(2), labels)
        assert torch.equal(x, expected) and torch.equal(t, steps.timesteps[n].expand(2))
        assert len(recorder.store) > 0  # the full evaluation filled the cache
