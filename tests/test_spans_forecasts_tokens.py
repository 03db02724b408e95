"""Methods beyond whole-branch reuse, through the same engine: per-evaluation spans (Delta-DiT),
forecasts (TaylorSeer) and token-wise recomputation (ToCa)."""

import pytest
import torch
from test_caching import Stub, exact_forward, perturbed

from l2c_bench import generate
from l2c_bench.caching import CacheConfigError, CacheRun, Plan, UnsupportedCombination, make_cache
from l2c_bench.caching.methods.delta_dit import delta_dit_plan
from l2c_bench.caching.methods.taylorseer import TaylorForecast
from l2c_bench.caching.methods.toca import StalestTokens
from l2c_bench.engine.model import run_branch
from l2c_bench.engine.rules import Forecast, Span, TokenWise
from l2c_bench.metrics.macs import macs

T, F = True, False


# --- Delta-DiT ------------------------------------------------------------------------------

def test_delta_dit_plan_by_hand():
    # 4 blocks, span of 2, interval 2, boundary 3: evaluations 0-2 rear span (2, 4), 3-5 front (0, 2)
    plan = delta_dit_plan(6, 4, interval=2, blocks=2, boundary=3)
    full, rear_reused, front_reused = ((T, T),) * 4, ((T, T), (T, T), (F, F), (F, F)), ((F, F), (F, F), (T, T), (T, T))
    assert plan.compute == (full, rear_reused, full, full, front_reused, full)
    assert plan.rule == Span(((2, 4),) * 3 + ((0, 2),) * 3, "delta") and plan.cache_steps == (1, 4)
    assert make_cache("delta_dit").plan(model=Stub("dit", 28), sampler="ddim", nfe=20).rule.span_at(19) == (0, 14)
    with pytest.raises(UnsupportedCombination, match="skips"):
        make_cache("delta_dit").plan(model=Stub("uvit", 29), sampler="dpm_solver2", nfe=20)
    with pytest.raises(CacheConfigError, match="before any evaluation computed it"):
        Plan((full, front_reused), (1,), rule=Span(((2, 4), (0, 2)), "delta"))


def test_delta_dit_adds_the_cached_span_offset_to_the_current_input():
    model = perturbed("DiT-toy")  # 8 blocks, span of 4, NFE 4, boundary 2: rear (4, 8) at 0-1, front (0, 4) at 2-3
    seen = {name: [] for name in ("embed", "in0", "out3", "in4", "out7", "final")}
    model.x_embedder.register_forward_hook(lambda m, a, o: seen["embed"].append(o + model.pos_embed))
    model.blocks[0].register_forward_pre_hook(lambda m, a: seen["in0"].append(a[0].clone()))
    model.blocks[3].register_forward_hook(lambda m, a, o: seen["out3"].append(o.clone()))
    model.blocks[4].register_forward_pre_hook(lambda m, a: seen["in4"].append(a[0].clone()))
    model.blocks[7].register_forward_hook(lambda m, a, o: seen["out7"].append(o.clone()))
    model.final_layer.register_forward_pre_hook(lambda m, a: seen["final"].append(a[0].clone()))
    out = generate(model, labels=[1], seeds=[0], steps=4, sampler="ddim", guidance_scale=1.0,
                   cache=make_cache("delta_dit", interval=2, blocks=4, boundary=2))
    assert len(seen["in0"]) == 3 and len(seen["in4"]) == 3  # front skipped at 3, rear skipped at 1
    # evaluation 1: the rear span is skipped; its output = its input now + the offset from evaluation 0
    torch.testing.assert_close(seen["final"][1], seen["out3"][1] + (seen["out7"][0] - seen["in4"][0]))
    # evaluation 3: the front span is skipped; block 4 gets the embedding now + the offset from evaluation 2
    torch.testing.assert_close(seen["in4"][2], seen["embed"][3] + (seen["out3"][2] - seen["in0"][2]))
    assert out.schedule[1, 4:].sum() == 0 and out.schedule[3, :4].sum() == 0 and out.schedule[2].all()
    assert macs(model, out.schedule) / macs(model, None, nfe=4) == pytest.approx(1 - 2 * 4 / (4 * 8), rel=0.05)


@pytest.mark.parametrize("arch,sampler,guidance,method", [("DiT-toy", "ddim", 1.5, "delta_dit"),
                                                         ("U-ViT-toy", "dpm_solver2", 1.0, "deepcache")])
def test_a_reused_span_runs_none_of_its_blocks_work_and_its_macs_say_so(arch, sampler, guidance, method):
    """A reused span's blocks run nothing: neither their branches nor their work outside them (DiT's
    adaLN modulation, U-ViT's skip projections). The MACs of the run, given its plan, are the linear
    and conv MACs it ran, per image and guidance pass, as torch's FLOP counter counts them over the
    call (less the attention products); without the plan every block counts as run."""
    from torch.utils.flop_counter import FlopCounterMode

    model = perturbed(arch)
    kw = dict(labels=[1, 2], seeds=[0, 1], steps=6, sampler=sampler, guidance_scale=guidance)
    with FlopCounterMode(display=False) as counter:
        out = generate(model, cache=make_cache(method), **kw)
    flops, root = counter.get_flop_counts(), type(model).__name__
    attention = sum(flops.get(f"{root}.{p}", {}).get(torch.ops.aten.bmm, 0) for attn, _ in model.branch_paths() for p in attn)
    ran = (sum(flops["Global"].values()) - attention) / 2 / (2 * len(kw["labels"]))  # both guidance passes
    assert out.cached_ratio > 0 and macs(model, out.schedule, nfe=6, plan=out.plan) == ran < macs(model, out.schedule)


def test_delta_dit_with_every_evaluation_a_key_is_the_uncached_sampler():
    model = perturbed("DiT-toy")
    kw = dict(labels=[1, 2], seeds=[0, 1], steps=6, sampler="ddim", guidance_scale=1.5)
    assert torch.equal(generate(model, cache=make_cache("delta_dit", interval=1), **kw).latents,
                       generate(model, **kw).latents)


# --- TaylorSeer -----------------------------------------------------------------------------

def test_taylor_forecast_by_hand():
    # one branch computed every 3rd evaluation (0, 3, 6, 9, 12), forecast at the others
    nfe, interval = 13, 3

    def forecast(order, fresh):
        compute = tuple((((n % interval == 0),) * 2,) for n in range(nfe))
        run = CacheRun(Plan(compute, tuple(n for n in range(nfe) if n % interval), rule=Forecast(TaylorForecast(order))))
        return [float(run_branch(run.begin_evaluation(1)[0], 0, 0, lambda n=n: torch.tensor(fresh(n))))
                for n in range(nfe)]

    line = forecast(1, lambda n: 3.0 + 2.0 * n)  # order 1 is exact on a line once two computations exist
    assert line[1] == line[2] == 3.0  # one computation so far: plain reuse
    assert line[4:] == pytest.approx([3.0 + 2.0 * n for n in range(4, nfe)])

    def f(n):
        return 1.0 - n + 0.5 * n * n

    used = forecast(2, f)  # the paper's backward differences: F + dF k / N + d2F k^2 / (2 N^2)
    for n in (7, 8):
        k, d1, d2 = n - 6, f(6) - f(3), f(6) - 2 * f(3) + f(0)
        assert used[n] == pytest.approx(f(6) + d1 * k / 3 + d2 * k * k / (2 * 9))


def test_taylorseer_order_0_is_fora():
    model = perturbed("DiT-toy")
    kw = dict(labels=[1, 2], seeds=[0, 1], steps=8, sampler="ddim", guidance_scale=1.5)
    fora = generate(model, cache=make_cache("fora", interval=3), **kw)
    seer = generate(model, cache=make_cache("taylorseer", interval=3, order=0), **kw)
    assert torch.equal(fora.latents, seer.latents) and torch.equal(fora.schedule, seer.schedule)
    first = generate(model, cache=make_cache("taylorseer", interval=3, order=1), **kw)
    assert not torch.equal(first.latents, fora.latents) and torch.equal(first.schedule, fora.schedule)


def test_taylorseer_passes_keep_their_own_histories():
    compute = ((((T, T),)), (((F, F),)), (((T, T),)), (((F, F),)))
    run = CacheRun(Plan(compute, (1, 3), rule=Forecast(TaylorForecast(1))))
    used = [exact_forward(run, n, 2, 1) for n in range(4)]
    # evaluation 3 forecasts each pass from its own values at 0 and 2: f(2) + (f(2) - f(0)) / 2
    for p in range(2):
        for j in range(2):
            f0, f2 = 100 * p + j, 2000 + 100 * p + j
            assert used[3][2 * p + j] == pytest.approx(f2 + (f2 - f0) / 2)


# --- ToCa ------------------------------------------------------------------------------------

def test_toca_recomputes_the_tokens_whose_input_moved_most():
    # one block; evaluation 0 full, evaluation 1 recomputes half the tokens of the MLP (branch 1)
    plan = Plan(((((T, T),)), (((F, T),))), (1,), rule=TokenWise((1.0, 0.5), StalestTokens()))
    run = CacheRun(plan)
    double = lambda x: 2 * x  # noqa: E731 - a per-token "MLP"
    x0 = torch.tensor([[[1.0], [1.0], [1.0], [1.0]]])  # (N=1, T=4, D=1)
    run_branch(run.begin_evaluation(1)[0], 0, 1, double, x0)
    x1 = torch.tensor([[[1.1], [3.0], [1.0], [0.2]]])  # relative changes 0.1, 2.0, 0, 0.8
    runner = run.begin_evaluation(1)[0]
    out = run_branch(runner, 0, 1, double, x1)
    assert out.flatten().tolist() == [2.0, 6.0, 2.0, pytest.approx(0.4)]  # tokens 1 and 3 fresh, 0 and 2 cached
    _, cached_in, age = runner.store[0, 1]
    assert cached_in.flatten().tolist() == [1.0, 3.0, 1.0, pytest.approx(0.2)] and age.flatten().tolist() == [1, 0, 1, 0]
    assert plan.share()[1, 0].tolist() == [0.0, 0.5] and plan.cached_ratio == pytest.approx(0.75)


def test_toca_at_full_token_share_is_attention_reuse_exactly():
    model = perturbed("DiT-toy")
    kw = dict(labels=[1, 2], seeds=[0, 1], steps=6, sampler="ddim", guidance_scale=1.5)
    toca = generate(model, cache=make_cache("toca", interval=3, ratio=1.0), **kw)
    compute = tuple(((n % 3 == 0, True),) * 8 for n in range(6))

    class AttentionOnly(type(make_cache("fora"))):
        def plan(self, *, model, sampler, nfe):
            return Plan(compute, (1, 2, 4, 5))

    assert torch.equal(toca.latents, generate(model, cache=AttentionOnly(), **kw).latents)
    quarter = generate(model, cache=make_cache("toca", interval=3, ratio=0.25), **kw)
    full_macs, m = macs(model, None, nfe=6), macs(model, quarter.schedule)
    attention_saved = full_macs - macs(model, toca.schedule)  # attention reused at 4 of 6 evaluations
    mlp_reused = torch.tensor([[[True, n % 3 == 0]] * 8 for n in range(6)])  # (nfe, blocks, 2), True = computed
    mlp_saved = full_macs - macs(model, mlp_reused)  # every MLP reused at the same 4 evaluations
    assert attention_saved > 0 and mlp_saved > 0
    # ratio 0.25 recomputes a quarter of the MLP tokens: 3/4 of the MLP saving on top of attention's
    assert full_macs - m == pytest.approx(attention_saved + 0.75 * mlp_saved)
