"""model=diffusers: diffusers transformers wrapped as model families of the engine
(`l2c_bench.models.zoo`), on their tiny random configurations and our toy DiT's weights."""

from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

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
from l2c_bench.sampling import GuidedDenoiser

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


@contextmanager
def layer_macs():
    """Counts the MACs of every linear and convolution layer call made inside it, as it runs (the
    functions nn.Linear and nn.Conv*d call; what the paper's counter counts): one list holding the total."""
    total, original = [0], {name: getattr(F, name) for name in ("linear", "conv1d", "conv2d", "conv3d")}

    def linear(x, weight, bias=None):
        total[0] += x.numel() // x.shape[-1] * weight.numel()  # rows x in x out
        return original["linear"](x, weight, bias)

    def conv(name):
        def run(x, weight, *args, **kwargs):
            out = original[name](x, weight, *args, **kwargs)
            total[0] += out.numel() * weight[0].numel()  # per output element: in / groups x kernel
            return out
        return run

    for name in original:
        setattr(F, name, linear if name == "linear" else conv(name))
    try:
        yield total
    finally:
        for name, fn in original.items():
            setattr(F, name, fn)


def counted_macs(images: int, fn, *args, **kwargs):
    """fn(*args, **kwargs) and the MACs per image of the linear and convolution layers it ran."""
    with layer_macs() as total:
        out = fn(*args, **kwargs)
    return out, total[0] / images


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
    """The same linears per branch; the rest differs by what diffusers runs more, from the layers'
    shapes: a timestep embedder (256 frequencies -> D -> D) in every block's adaLN, and one more for
    the output layer, against our one. Inside a block, outside its branches: the adaLN modulation
    (D -> 6D), and in diffusers' that embedder."""
    ours, theirs = branch_macs(toy_dit), branch_macs(from_ours(toy_dit))
    assert theirs.branch == ours.branch
    depth, width = toy_dit.args.depth, toy_dit.args.hidden_size
    embedder = 256 * width + width * width
    assert theirs.base - ours.base == depth * embedder
    assert ours.block == (width * 6 * width,) * depth and theirs.block == (width * 6 * width + embedder,) * depth


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
        # every block routes both branches, but FLUX.2's single-stream blocks: their attention and MLP
        # are one fused module (flux2.py), the attention branch
        fused = {b for b in blocks if not model.branch_paths()[b][MLP]}
        assert fused == ({2, 3} if cls == "Flux2Transformer2DModel" else set())
        for b in blocks:
            assert {branch for block, branch, _ in calls if block == b} == ({ATTENTION} if b in fused else {ATTENTION, MLP})
        calls.clear()
        span = Recording(span=(1, model.num_blocks))
        assert torch.equal(model(x, t, y, span), bare)
    assert {c[0] for c in calls} == set(range(model.num_blocks))  # the span's blocks still route
    for kind, value in span.probes.items():
        assert value.ndim == 3 and value.shape[0] == len(x), kind


def same(a, b) -> bool:
    """Equal tensors, or tuples of them (a dual-stream block returns its text and image streams; SD3's
    last block None for the text)."""
    if a is None or b is None:
        return a is b
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return torch.equal(a, b)


@pytest.mark.parametrize("cls", CLASSES)
def test_a_reused_branch_skips_its_modules(cls, zoo):
    """Evaluation 1 reuses every attention branch and computes every MLP. There, no submodule of an
    attention module is called and no work runs inside one (torch's FLOP counter, per module),
    while each MLP does the work it did at evaluation 0; each attention module hands back the very
    tensors evaluation 0 stored; and each block's output is what the block computes, uncached, with
    those tensors in place of its attention outputs (which differs from computing them afresh)."""
    model = zoo[cls]
    blocks, root = model.num_blocks, type(model).__name__
    plan = Plan((((True, True),) * blocks, ((False, True),) * blocks), (1,))
    modules = [{branch: {f"{path}.{attr}": getattr(block, attr) for attr, b, _, _ in model.branch_modules(i) if b == branch}
                for branch in (ATTENTION, MLP)} for i, (block, path) in enumerate(zip(model.blocks, model.block_paths, strict=True))]
    attention = {p: m for block in modules for p, m in block[ATTENTION].items()}
    mlp = [p for block in modules for p in block[MLP]]
    calls, returned, block_io = [], {p: [] for p in attention}, []
    hooks = [sub.register_forward_pre_hook(lambda *a, p=p: calls.append(p))
             for p, m in attention.items() for sub in m.modules() if sub is not m]
    hooks += [m.register_forward_hook(lambda m, a, out, p=p: returned[p].append(out)) for p, m in attention.items()]
    x, t, y = inputs(model)
    run, work, called = CacheRun(plan), [], []
    try:
        with torch.no_grad():
            for n in range(2):
                if n == 1:  # the reuse step: each block's inputs and output
                    hooks += [b.register_forward_pre_hook(lambda m, a, kw: block_io.append([a, dict(kw)]), with_kwargs=True)
                              for b in model.blocks]
                    hooks += [b.register_forward_hook(lambda m, a, out: block_io[-1].append(out)) for b in model.blocks]
                calls.clear()
                with FlopCounterMode(display=False) as counter:
                    reused = model(x, t.flip(0) if n else t, y, run.begin_evaluation(1)[0])
                work.append({p: sum(counter.get_flop_counts().get(f"{root}.{p}", {}).values()) for p in (*attention, *mlp)})
                called.append(list(calls))
    finally:
        for h in hooks:
            h.remove()
    first, again = work
    assert called[0] and all(first[p] > 0 for p in attention)  # evaluation 0 computed every attention
    assert called[1] == [] and all(again[p] == 0 for p in attention)  # none ran at the reuse
    assert all(again[p] == first[p] > 0 for p in mlp)  # the MLPs ran as before
    for p, (stored, handed) in returned.items():  # the stored tensors themselves, not copies
        assert all(a is b for a, b in zip(stored, handed, strict=True)) if isinstance(stored, tuple) else stored is handed, p
    assert len(block_io) == blocks
    with torch.no_grad():
        for block, io, branches in zip(model.blocks, block_io, modules, strict=True):
            args, kwargs, out = io
            subs = [m.register_forward_hook(lambda m, a, o, p=p: returned[p][0]) for p, m in branches[ATTENTION].items()]
            try:
                assert same(block(*args, **kwargs), out)  # no runner: the block computes, but for the substitution
            finally:
                for h in subs:
                    h.remove()
        assert not torch.equal(reused, model(x, t.flip(0), y))  # computing attention there gives another output


# every kind of reuse: branches (fora), span (deepcache: rear blocks; delta_dit: front blocks), forecast,
# token-wise MLP, dropped branches, a span decided at run time (fbcache: a threshold that reuses on
# every toy class, random weights change the first block's residual by 0.2-0.4 per step)
METHODS = (("fora", {}), ("deepcache", {}), ("delta_dit", {}), ("taylorseer", {}), ("toca", {}), ("layer_drop", {}),
           ("fbcache", {"threshold": 0.3}))


@pytest.mark.parametrize("cls", CLASSES)
def test_methods_run_on_each_class_and_count_the_macs_that_ran(cls, zoo):
    """The MACs reported for a run (`macs` of its realised schedule and plan) are the MACs of the
    linear and convolution layer calls the sampling call made, per image and guidance pass, counted
    as they ran: reused, forecast, token-wise and dropped branches, and reused spans, whose blocks run
    nothing (their norms, modulation and projections outside the branches included)."""
    model = zoo[cls]
    kw = dict(labels=[1, 2], seeds=[0, 1], steps=6, sampler=SAMPLER[model.family], guidance_scale=1.5)
    images = 2 * len(kw["labels"])  # both guidance halves run as one batch
    base, full = counted_macs(images, generate, model, **kw)
    assert full == macs(model, None, nfe=6)
    for name, params in METHODS:
        if name == "fbcache" and cls == "Flux2Transformer2DModel":  # its random toy's block-1 change: 0.6-1.2
            params = {"threshold": 1.0}
        result, ran = counted_macs(images, generate, model, cache=make_cache(name, **params), **kw)
        assert torch.isfinite(result.latents).all(), name
        assert result.cached_ratio > 0 and ran < full, name  # something was reused
        assert macs(model, result.schedule, nfe=6, plan=result.plan) == ran, name
        assert not torch.equal(result.latents, base.latents), name


@pytest.mark.parametrize("cls", ["PixArtTransformer2DModel", "SD3Transformer2DModel", "FluxTransformer2DModel"])
def test_text_classes_use_prompt_embeddings_and_an_empty_prompt_for_guidance(cls, zoo):
    """One guided evaluation as the samplers run it (GuidedDenoiser, w = 1.5): the transformer's
    batch reads the labels' prompt embeddings (and pooled vectors) in its conditional half and the
    empty prompt's, the bank's last row, in its unconditional half; the guided output is
    uncond + w (cond - uncond) of the two halves the model returned on the guidance channels, the
    conditional half's on the rest (PixArt's learned variance)."""
    model = zoo[cls]
    bank = model.bank
    assert model.num_classes == model.null_class == bank.prompts
    labels = torch.tensor([0, 3])
    x, t, _ = inputs(model)
    seen, returned = [], []
    hooks = [model.transformer.register_forward_pre_hook(lambda m, a, kw: seen.append(kw), with_kwargs=True),
             model.register_forward_hook(lambda m, a, out: returned.append(out))]
    try:
        with torch.no_grad():
            guided = GuidedDenoiser(model, labels, 1.5, model.guidance_channels)(x, t)
    finally:
        for h in hooks:
            h.remove()
    (given,), (out,) = seen, returned  # one pass over both halves
    empty = bank.embeddings[bank.prompts]  # the empty prompt: row P (prompts.py)
    assert not any(torch.equal(empty, bank.embeddings[i]) for i in range(bank.prompts))
    text = given["encoder_hidden_states"]
    assert torch.equal(text[:2], bank.embeddings[labels]) and torch.equal(text[2:], empty.expand(2, -1, -1))
    if "pooled_projections" in given:  # SD3, Flux
        pooled = given["pooled_projections"]
        assert torch.equal(pooled[:2], bank.pooled[labels]) and torch.equal(pooled[2:], bank.pooled[[bank.prompts] * 2])
    cond, uncond = out.chunk(2)
    assert not torch.equal(cond, uncond)  # the prompt conditions the output
    c = model.guidance_channels
    assert torch.equal(guided[:, :c], uncond[:, :c] + 1.5 * (cond[:, :c] - uncond[:, :c]))
    assert torch.equal(guided[:, c:], cond[:, c:]) and (guided.shape[1] > c) == (cls == "PixArtTransformer2DModel")
    again = build_zoo(cls)
    assert torch.equal(again.bank.embeddings, bank.embeddings)  # seeded


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


def test_flow_router_pairs_reach_the_cache_step_as_the_sampler_does(zoo, tmp_path):
    """FlowEulerPairs (interval 3) against flow_euler itself. An L2C plan run by `generate` says
    which evaluations are cache steps, which router row decides each (a router that recomputes
    exactly one branch per row) and which full step each reuses (the stored tensor it hands back).
    Then the sampler is run again, recording every evaluation, with a velocity of noise - x0 up to
    that full step (which keeps it on the straight path (1 - sigma) x0 + sigma noise) and the model
    from there: each pair's preparation evaluates where and when the sampler evaluated, the full
    step's evaluation alone recorded, and reaches the sampler's input of the cache step."""
    from l2c_bench.caching.methods.l2c.learning.pairs import make_pairs
    from l2c_bench.caching.methods.l2c.learning.runners import Recorder

    model = zoo["SD3Transformer2DModel"]
    nfe, blocks = 8, model.num_blocks
    pairs = make_pairs("flow", "flow_euler", nfe, torch.device("cpu"), interval=3, flow_shift=model.flow_shift)
    kw = dict(labels=[1, 2], seeds=[0, 1], steps=nfe, sampler="flow_euler", guidance_scale=1.0)
    ff = model.blocks[0].ff  # block 0's image MLP: its output per evaluation
    outputs = []
    handle = ff.register_forward_hook(lambda m, a, out: outputs.append(out))
    router = tmp_path / "router.pt"
    save_router(torch.eye(2 * blocks)[torch.arange(nfe) % (2 * blocks)] * 20 - 10, router)  # row r: entry r % 2B
    try:
        l2c = generate(model, cache=make_cache("l2c", router=str(router), interval=3), **kw)
    finally:
        handle.remove()
    schedule = l2c.schedule.view(nfe, 2 * blocks)
    assert [n for n, _ in pairs.pairs] == list(l2c.plan.cache_steps)
    full_of = {}  # cache step -> the full step whose tensors it reuses
    for n, row in pairs.pairs:
        assert schedule[n].nonzero().flatten().tolist() == [row % (2 * blocks)]  # the row it reads
        assert row % (2 * blocks) != MLP  # so block 0's MLP is reused: the tensor of which evaluation?
        full_of[n] = next(k for k in range(n) if outputs[k] is outputs[n])
        assert schedule[full_of[n]].all()
    assert sorted({n - full for n, full in full_of.items()}) == [1, 2]  # interval 3: two cache steps per full one
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, model.in_channels, model.input_size, model.input_size, generator=g)
    labels = torch.tensor(kw["labels"])
    calls, sampler = [], [True]  # (x, t, runner) of each evaluation; whether the sampler runs
    for full in sorted(set(full_of.values())):

        def straight(module, args, out, full=full):
            calls.append((args[0], args[1], args[3]))
            if sampler[0] and len(calls) <= full:  # the sampler before the full step: the straight path's velocity
                return calls[0][0] - x0
            return out

        handle = model.register_forward_hook(straight)
        try:
            calls.clear()
            sampler[0] = True
            generate(model, **kw)
            sampled, noise, sampler[0] = calls[:], calls[0][0], False
            for n, row in pairs.pairs:
                if full_of[n] != full:
                    continue
                calls.clear()
                recorder = Recorder()
                x, t = pairs.prepare(model, x0, labels, noise, row, recorder)
                assert len(calls) == n - full and recorder.store  # the full step, then uncached steps
                for k, (xk, tk, runner) in enumerate(calls, start=full):
                    assert torch.equal(tk, sampled[k][1]) and (runner is recorder) == (k == full)
                    assert torch.allclose(xk, sampled[k][0], atol=1e-5)
                assert torch.equal(t, sampled[n][1]) and torch.allclose(x, sampled[n][0], atol=1e-5)
        finally:
            handle.remove()
