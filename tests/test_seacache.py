"""SeaCache: the SEA filter against diffusers' implementation of the authors' Eq. (7) and against
a DFT written out by hand, the accumulate rule replayed on recorded indicators, the noise levels,
and the method in the engine on both toy families."""

import numpy as np
import pytest
import torch
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
