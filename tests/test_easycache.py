"""EasyCache: its rule by hand, replayed against an independent transcription of the authors'
loop on a recorded sequence, in the engine on both toy families, and a run's row."""

import pytest
import torch
from conftest import ROW_ONLY, compose_config
from test_caching import perturbed

from l2c_bench import generate
from l2c_bench.caching import CacheConfigError, make_cache
from l2c_bench.caching.methods.easycache import EasyCachePolicy
from l2c_bench.run import run_point


def drive(policy, inputs, model):
    """Our policy over a recorded input sequence, `model` standing for the block stack: decide,
    and on a computed evaluation show it the output (as the engine's run_span does)."""
    state, decisions, changes = policy.start(), [], []
    for n, x in enumerate(inputs):
        reuse, change = policy.decide(state, lambda kind, x=x: x, n > 0, n, len(inputs))
        if not reuse:
            policy.observe(state, x, model(x), n)
        decisions.append(reuse)
        changes.append(change)
    return decisions, changes


def authors_loop(inputs, model, thresh, ret_steps):
    """An independent transcription of EasyCache4Wan2.1/easycache_generate.py `easycache_forward`
    (conditional pass only; one call per step): which steps skip the network."""
    prev_in = prev_out = prev_prev_in = k = None
    acc, skipped, num_steps = 0.0, [], len(inputs)
    for cnt, raw in enumerate(inputs):
        if cnt < ret_steps or cnt >= num_steps - 1:
            calc, acc = True, 0.0
        elif prev_in is not None and prev_out is not None and k is not None:
            acc += float(k * (raw - prev_in).abs().mean() / prev_out.abs().mean())
            calc = acc >= thresh
            if calc:
                acc = 0.0
        else:
            calc = True
        prev_in = raw
        skipped.append(not calc)
        if calc:
            out = model(raw)
            if prev_out is not None and prev_prev_in is not None:
                k = (out - prev_out).abs().mean() / (prev_in - prev_prev_in).abs().mean()
            prev_prev_in, prev_out = prev_in, out
    return skipped


def test_easycache_rule_by_hand():
    # x = 10, 9, ..., 5 and out = 2x: k = 2, |out_m| = 18 after evaluation 1, so each step predicts
    # 2 * 1 / 18 = 1/9: reuse at 2 (1/9), 3 (2/9), compute at 4 (3/9 >= 0.3), the last computes
    inputs = [torch.full((2, 3, 4), float(v)) for v in (10, 9, 8, 7, 6, 5)]
    decisions, changes = drive(EasyCachePolicy(0.3, warmup=2), inputs, lambda x: 2 * x)
    assert decisions == [False, False, True, True, False, False]
    assert changes[:2] == [None, None] and changes[2:5] == pytest.approx([1 / 9] * 3) and changes[5] is None
    # the rate needs two computed evaluations: with warmup 1 evaluation 1 computes to measure it
    assert drive(EasyCachePolicy(1e9, warmup=1), inputs, lambda x: 2 * x)[0] == [False, False, True, True, True, False]
    # out = 6x - 72: k = 6 and |out| = 18 predict 1/3 >= 0.3 at once, so 2 computes; then |out| = 24:
    # 3 reuses (0.25), 4 computes (0.5)
    assert drive(EasyCachePolicy(0.3, warmup=2), inputs, lambda x: 6 * x - 72)[0] == [False, False, False, True,
                                                                                        False, False]


@pytest.mark.parametrize("thresh,ret_steps", [(0.05, 2), (0.1, 3), (0.2, 2), (0.4, 4)])
def test_easycache_replays_the_authors_loop_on_a_recorded_sequence(thresh, ret_steps):
    # a recorded trajectory: inputs drifting smoothly with noise, and a nonlinear "network"
    g = torch.Generator().manual_seed(0)
    base, drift = torch.randn(4, 16, generator=g), torch.randn(4, 16, generator=g)
    inputs = [base + 0.1 * n * drift + 0.01 * torch.randn(4, 16, generator=g) for n in range(20)]
    weight = torch.randn(16, 16, generator=g) / 4

    def model(x):
        return torch.tanh(x @ weight) + 0.5 * x

    ours = drive(EasyCachePolicy(thresh, warmup=ret_steps), inputs, model)[0]
    assert ours == authors_loop(inputs, model, thresh, ret_steps)
    assert 0 < sum(ours) < 20 - ret_steps - 1  # each case reuses some evaluations and computes some


@pytest.mark.parametrize("name,sampler,scale", [("DiT-toy", "ddim", 1.5), ("U-ViT-toy", "dpm_solver2", 0.4)])
def test_easycache_in_the_engine(name, sampler, scale):
    model = perturbed(name)
    kw = dict(labels=[1, 2], seeds=[0, 1], steps=6, sampler=sampler, guidance_scale=scale)
    plain = generate(model, **kw)
    never = generate(model, cache=make_cache("easycache", threshold=0.0), **kw)
    assert torch.equal(never.latents, plain.latents) and never.schedule.all()  # threshold 0: a valid all-compute row
    always = generate(model, cache=make_cache("easycache", threshold=1e9, warmup=2), **kw)
    decisions = always.realised[0]["decisions"]
    assert decisions == [False, False] + [True] * 3 + [False]  # warm-up, reuse on the measured rate, last computes
    assert not always.schedule[2:5].any() and always.schedule[[0, 1, 5]].all()
    assert not torch.equal(always.latents, plain.latents)
    with pytest.raises(CacheConfigError, match="cache.warmup"):
        make_cache("easycache", warmup=0)


@pytest.mark.slow
@pytest.mark.parametrize("model", [("model=dit",), ("model=diffusers", "model.diffusers_class=FluxTransformer2DModel")],
                         ids=["dit-toy", "flux-zoo"])
def test_easycache_runs_write_ok_rows(model, tmp_path):
    row = run_point(compose_config(tmp_path, *ROW_ONLY, "steps=8", *model, "cache=easycache", "cache.threshold=0.3"))
    assert row["status"] == "ok", row.get("error")
    assert row["metrics.host_sync_per_evaluation"] is True
    assert 0 < row["metrics.reused_ratio_all"] < 1 and row["metrics.macs_speedup"] > 1
