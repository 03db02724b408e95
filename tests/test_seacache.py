"""SeaCache: the SEA filter against diffusers' implementation of the authors' Eq. (7) and against
a DFT written out by hand, the accumulate rule replayed on recorded indicators, the noise levels,
and the method in the engine on both toy families."""

import numpy as np
import pytest
import torch
from conftest import ROW_ONLY, compose_config
from test_caching import perturbed

from l2c_bench import generate
from l2c_bench.caching import UnsupportedCombination, make_cache
from l2c_bench.caching.methods.noise_levels import flow_sigmas
from l2c_bench.caching.methods.seacache import SeaCachePolicy, sea_filter, token_grid


def test_sea_filter_is_diffusers_eq7_and_a_hand_dft():
    from diffusers.hooks.sea_cache import _apply_sea_filter

    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(1, 2, 4, 6, 3, generator=g)  # (N, F, H, W, D)
    for sigma in (0.1, 0.5, 0.9):
        ours = sea_filter(tokens, sigma, 3.0)
        theirs = _apply_sea_filter(tokens[0], sigma=sigma, power_exp=3.0)  # (F, H, W, D), FFT over dims 0-2
        assert torch.allclose(ours[0], theirs, atol=1e-5)
    # by hand, on one 1-D axis of 4: frequencies 0, 1/4, -1/2, -1/4 (numpy's DFT, not torch.fft)
    sigma, power = 0.5, 3.0
    f = np.array([0.0, 0.25, 0.5, 0.25])
    prior = 1.0 / (f**power + 1e-16)
    gain = 0.5 * prior / (0.25 * prior + 0.25)
    gain /= gain.mean()
    x = np.array([1.0, -2.0, 0.5, 3.0])
    expected = np.fft.ifft(np.fft.fft(x) * gain).real
    got = sea_filter(torch.tensor(x, dtype=torch.float32).reshape(1, 1, 1, 4, 1), sigma, power).reshape(-1)
    assert np.allclose(got.numpy(), expected, atol=1e-5)
    # almost no noise: the gain is flat and the filter is the identity
    assert torch.allclose(sea_filter(tokens, 1e-6, 3.0), tokens, atol=1e-4)


def test_seacache_rule_replayed_on_recorded_indicators():
    # recorded modulated inputs (N, T, D) on a 4x4 grid: drift shrinking over the evaluations
    g = torch.Generator().manual_seed(1)
    base = torch.randn(2, 16, 8, generator=g)
    recorded = [base + 0.3 * torch.randn(2, 16, 8, generator=g) / (n + 1) for n in range(10)]
    sigmas = tuple(np.linspace(0.95, 0.05, 10))
    policy = SeaCachePolicy(0.5, sigmas, (4, 8, 8), power=3.0, warmup=1)  # latent (C, 8, 8), patch 2 -> 4x4 grid
    state, ours = policy.start(), []
    for n, m in enumerate(recorded):
        ours.append(policy.decide(state, lambda kind, m=m: m, n > 0, n, 10)[0])
    # the authors' loop, written independently: filter with numpy, accumulate rel-L1, reset on compute
    expected, previous, accumulated = [], None, 0.0
    for n, m in enumerate(recorded):
        grid = m.numpy().reshape(2, 1, 4, 4, 8).astype(np.float64)
        f = [np.abs(np.fft.fftfreq(k)) for k in (1, 4, 4)]
        s, z = 1 - sigmas[n], sigmas[n]
        gains = [s / (f_ ** 3 + 1e-16) / (s * s / (f_ ** 3 + 1e-16) + z * z) for f_ in f]
        gain = gains[0][:, None, None] * gains[1][None, :, None] * gains[2][None, None, :]
        gain /= gain.mean()
        filtered = np.fft.ifftn(np.fft.fftn(grid, axes=(1, 2, 3)) * gain[None, ..., None], axes=(1, 2, 3)).real
        if n < 1 or n >= 9 or previous is None:
            reuse, accumulated = False, 0.0
        else:
            accumulated += np.abs(filtered - previous).mean() / np.abs(previous).mean()
            reuse = accumulated < 0.5
            if not reuse:
                accumulated = 0.0
        previous = filtered
        expected.append(reuse)
    assert ours == expected and 0 < sum(ours) < 8


def test_token_grid_and_noise_levels():
    assert token_grid((4, 8, 8), 16) == (0, 1, 4, 4)  # DiT: patch 2
    assert token_grid((4, 8, 8), 18) == (2, 1, 4, 4)  # U-ViT: label and time tokens lead
    assert token_grid((16, 3, 8, 8), 48) == (0, 3, 4, 4)  # video: frames unpatched
    model = perturbed("DiT-toy")
    ddim = flow_sigmas("ddim", 10, model)
    assert len(ddim) == 10 and (np.diff(ddim) < 0).all() and 0 < ddim[-1] < ddim[0] < 1
    # ddim's first evaluation is DiT's timestep 999: abar = prod(1 - linear betas)
    abar = np.prod(1 - np.linspace(1e-4, 0.02, 1000))
    assert ddim[0] == pytest.approx(np.sqrt(1 - abar) / (np.sqrt(abar) + np.sqrt(1 - abar)))
    with pytest.raises(UnsupportedCombination, match="dpm_solver_fast"):
        flow_sigmas("dpm_solver_fast", 10, model)


@pytest.mark.parametrize("name,sampler,scale", [("DiT-toy", "ddim", 1.5), ("U-ViT-toy", "dpm_solver2", 0.4)])
def test_seacache_in_the_engine(name, sampler, scale):
    model = perturbed(name)
    kw = dict(labels=[1, 2], seeds=[0, 1], steps=10, sampler=sampler, guidance_scale=scale)
    plain = generate(model, **kw)
    never = generate(model, cache=make_cache("seacache", threshold=0.0), **kw)
    assert torch.equal(never.latents, plain.latents) and never.schedule.all()  # its rule computes every step: valid
    always = generate(model, cache=make_cache("seacache", threshold=1e9), **kw)
    assert always.realised[0]["decisions"] == [False] + [True] * 8 + [False]
    assert not always.schedule[1:9].any() and always.schedule[[0, 9]].all()
    assert not torch.equal(always.latents, plain.latents)


# --- diffusers' own SeaCache hook as a peer (`diffusers_seacache`) -------------------------------

def _zoo(cls):
    from l2c_bench.models.zoo import build_zoo

    torch.manual_seed(0)
    model = build_zoo(cls).eval()
    sampler = "ddim" if model.family == "dit" else "flow_euler"
    return model, dict(labels=[1, 2], seeds=[0, 1], steps=10, sampler=sampler, guidance_scale=1.0)


@pytest.mark.parametrize("cls", ["DiTTransformer2DModel", "FluxTransformer2DModel"])
def test_diffusers_seacache_skips_where_its_gate_says(cls):
    """diffusers' gate, replayed on the latents its transformer was called with in the same run:
    per sample the SEA-filtered latent's relative L1 change to the previous call's, averaged over
    samples, summed; compute at step 0, the last step, after 2 reuses in a row, or once the sum
    would reach the threshold (then it resets)."""
    model, kw = _zoo(cls)
    seen = []  # the latent of every transformer call (N, C, H, W) (Flux: packed tokens)
    hook = model.transformer.register_forward_pre_hook(lambda m, a, k: seen.append(k.get("hidden_states", a[0] if a
                                                                                         else None)), with_kwargs=True)
    try:
        out = generate(model, cache=make_cache("diffusers_seacache", threshold=0.25), **kw)
    finally:
        hook.remove()
    from l2c_bench.caching.methods.diffusers_hooks import _sea_latents

    sigmas, latents = flow_sigmas(kw["sampler"], 10, model), _sea_latents(model)
    previous, accumulated, reused_in_row, computed = None, 0.0, 0, []
    for n, x in enumerate(seen):
        filtered = [sea_filter(v.movedim(0, -1)[None], sigmas[n], 3.0)[0] for v in latents(None, (x,), {})]
        forced = n < 1 or n >= 9 or previous is None or reused_in_row >= 2
        if forced:
            compute = True
        else:
            d = sum(float((a - b).abs().mean() / (b.abs().mean() + 1e-16)) for a, b in zip(filtered, previous,
                                                                                          strict=True)) / len(filtered)
            compute = accumulated + d >= 0.25
            accumulated = 0.0 if compute else accumulated + d
        if compute:
            accumulated, reused_in_row = 0.0, 0
        else:
            reused_in_row += 1
        previous = filtered
        computed.append(compute)
    assert out.schedule[:, 0, 0].tolist() == computed and out.schedule.all(dim=(1, 2)).eq(out.schedule.any(dim=(1, 2))).all()
    assert 0 < computed.count(False) and out.plan.hooks.gated_calls == 10


def test_diffusers_seacache_that_computes_every_step_is_a_valid_row_and_an_unwired_one_fails(monkeypatch, tmp_path):
    from l2c_bench.caching.methods.diffusers_hooks import PeerHooks, SeaHooks
    from l2c_bench.run import run_point

    model, kw = _zoo("DiTTransformer2DModel")
    plain = generate(model, **kw)
    never = generate(model, cache=make_cache("diffusers_seacache", threshold=0.0), **kw)
    # its own rule computed every step, with the hook wired at every call: the uncached samples, a valid row
    assert never.schedule.all() and torch.equal(never.latents, plain.latents) and never.plan.hooks.gated_calls == 10
    # unwired (the context without sigma, as the other peers pass it): it would silently compute every step
    monkeypatch.setattr(SeaHooks, "context", PeerHooks.context)
    with pytest.raises(RuntimeError, match="cache_context"):  # diffusers' fall-open, made an error
        generate(model, cache=make_cache("diffusers_seacache", threshold=0.25), **kw)
    row = run_point(compose_config(tmp_path, *ROW_ONLY, "model=diffusers", "model.diffusers_class=DiTTransformer2DModel",
                                   "cache=diffusers_seacache", "steps=10"))
    assert row["status"] == "failed" and "SeaCache" in row["error"] and "cache_context" in row["error"]


def test_diffusers_seacache_is_unsupported_off_the_zoo():
    with pytest.raises(UnsupportedCombination, match="model=diffusers"):
        generate(perturbed("DiT-toy"), cache=make_cache("diffusers_seacache"), labels=[1], seeds=[0], steps=4, guidance_scale=1.0,
                 sampler="ddim")


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [("model=dit", "cache=seacache"),
                                       ("model=diffusers", "model.diffusers_class=FluxTransformer2DModel",
                                        "cache=seacache"),
                                       ("model=diffusers", "model.diffusers_class=FluxTransformer2DModel",
                                        "cache=diffusers_seacache")])
def test_seacache_runs_write_ok_rows(overrides, tmp_path):
    from l2c_bench.run import run_point

    row = run_point(compose_config(tmp_path, *ROW_ONLY, *overrides, "cache.threshold=0.5", "steps=8"))
    assert row["status"] == "ok", row.get("error")
    assert 0 < row["metrics.reused_ratio_all"] < 1 and row["metrics.macs_speedup"] > 1


@pytest.mark.slow
def test_seacache_with_dpm_solver_fast_is_an_unsupported_row(tmp_path):
    from l2c_bench.run import run_point

    row = run_point(compose_config(tmp_path, *ROW_ONLY, "model=uvit", "sampler=dpm_solver_fast", "cache=seacache",
                                   "steps=10"))
    assert row["status"] == "unsupported" and "dpm_solver_fast" in row["error"]


def test_diffusers_seacache_is_unsupported_where_it_could_never_reuse():
    # SD3's last block drops the text stream: diffusers' hook records no residual and falls open
    model, kw = _zoo("SD3Transformer2DModel")
    with pytest.raises(UnsupportedCombination, match="drops that stream"):
        generate(model, cache=make_cache("diffusers_seacache"), **kw)
