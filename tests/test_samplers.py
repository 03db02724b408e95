"""Samplers reproduce the official schedules and golden values."""

import numpy as np
import pytest
import torch
from conftest import load_reference

from l2c_bench.sampling import SpacedDiffusion, check_sampler
from l2c_bench.sampling.ddim import DiffusionTables, ddim_sample, p_mean_variance
from l2c_bench.sampling.diffusion import linear_betas
from l2c_bench.sampling.dpm_solver import (
    DiscreteVPSchedule,
    dpm_solver2_sample,
    dpm_solver_fast_sample,
    fast_orders,
    sd_betas,
    time_grid,
)

DIT = load_reference("dit_diffusion_reference.json")
UVIT = load_reference("uvit_sampler_reference.json")


def test_dit_betas_and_cumulative_alphas():
    np.testing.assert_allclose(linear_betas(), DIT["betas_1000"], rtol=0, atol=1e-15)
    abar = np.cumprod(1 - linear_betas())
    for t, value in DIT["alphas_cumprod_checks"].items():
        assert abar[int(t)] == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("spec", list(DIT["respacing"]))
def test_dit_respacing_is_exact(spec):
    ref = DIT["respacing"][spec]
    diffusion = SpacedDiffusion.create(spec)
    assert diffusion.timestep_map.tolist() == ref["timestep_map"]
    assert diffusion.timestep_map[::-1].tolist() == ref["model_timesteps_in_call_order"]
    np.testing.assert_allclose(diffusion.betas, ref["spaced_betas"], rtol=1e-12, atol=0)
    np.testing.assert_allclose(diffusion.posterior_log_variance_clipped[:3],
                               ref["spaced_posterior_log_variance_clipped_first3"], rtol=1e-12)


def test_l2c_dit_spacing_facts():
    assert SpacedDiffusion.create(20).timestep_map.tolist()[:3] == [0, 53, 105]
    assert SpacedDiffusion.create(20).timestep_map.tolist()[-2:] == [946, 999]
    assert SpacedDiffusion.create(50).timestep_map.tolist()[:3] == [0, 20, 41]


@pytest.mark.parametrize("case", DIT["golden_p_mean_variance"]["cases"], ids=lambda c: f"{c['spec']}-{c['t_index']}")
def test_dit_golden_p_mean_variance(case):
    golden = DIT["golden_p_mean_variance"]
    x, model_output = torch.tensor(golden["x"]), torch.tensor(golden["model_output"])
    diffusion = SpacedDiffusion.create(case["spec"])
    assert diffusion.timestep_map[case["t_index"]] == case["model_timestep"]
    mean, log_var, pred_x0 = p_mean_variance(DiffusionTables(diffusion, x.device), model_output, x, case["t_index"])
    for ours, key in ((mean, "mean"), (log_var, "log_variance"), (pred_x0, "pred_xstart")):
        torch.testing.assert_close(ours, torch.tensor(case[key]), rtol=1e-6, atol=1e-7)


def test_ddim_eta0_single_step_matches_closed_form():
    diffusion = SpacedDiffusion.create(1)  # one step from t=999 straight to x0
    x = torch.randn(2, 4, 2, 2, generator=torch.Generator().manual_seed(1))
    eps = torch.randn_like(x)
    out = ddim_sample(lambda x_, t: eps, x, diffusion)
    abar = diffusion.alphas_cumprod[0]
    torch.testing.assert_close(out, (x - np.sqrt(1 - abar) * eps) / np.sqrt(abar), rtol=1e-5, atol=1e-5)


def _steps_by_hand(eta: float | None, x: np.ndarray, eps: np.ndarray, seeds, steps=4):
    """Respaced steps k = steps-1 .. 0 with a constant eps, in float64 from the spaced tables:
    DDIM (Song et al., eq. 12) when eta is given, else DiT's ancestral step with 'fixed large'
    variance (beta_k); the noise is each sample's own generator's draws; none at the last step."""
    diffusion = SpacedDiffusion.create(steps)
    abar, abar_prev = diffusion.alphas_cumprod, diffusion.alphas_cumprod_prev
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    for k in range(steps - 1, -1, -1):
        a, ap = abar[k], abar_prev[k]
        x0 = (x - np.sqrt(1 - a) * eps) / np.sqrt(a)
        if eta is not None:
            sigma = eta * np.sqrt((1 - ap) / (1 - a)) * np.sqrt(1 - a / ap)
            x = np.sqrt(ap) * x0 + np.sqrt(1 - ap - sigma**2) * eps
        else:
            beta = 1 - a / ap
            x = beta * np.sqrt(ap) / (1 - a) * x0 + (1 - ap) * np.sqrt(1 - beta) / (1 - a) * x
            sigma = np.sqrt(beta)  # 'fixed large' at k >= 1
        if k > 0 and sigma > 0:
            x = x + sigma * np.stack([torch.randn(x.shape[1:], generator=g).double().numpy() for g in generators])
    return x


@pytest.mark.parametrize("eta", [1.0, 0.5, None])  # None: ancestral DDPM
def test_stochastic_steps_match_the_closed_form(eta):
    from l2c_bench.sampling.ddim import ddpm_sample

    x = torch.randn(2, 3, 2, 2, generator=torch.Generator().manual_seed(4))
    eps = torch.randn_like(x)
    seeds = [11, 12]
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    diffusion = SpacedDiffusion.create(4)
    if eta is None:
        ours = ddpm_sample(lambda x_, t: eps, x, diffusion, generators=generators)
    else:
        ours = ddim_sample(lambda x_, t: eps, x, diffusion, eta=eta, generators=generators)
    expected = _steps_by_hand(eta, x.double().numpy(), eps.double().numpy(), seeds)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-4, atol=1e-4)
    deterministic = _steps_by_hand(0.0, x.double().numpy(), eps.double().numpy(), seeds)
    assert np.abs(ours.numpy() - deterministic).max() > 1e-2  # the noise is really there


def test_uvit_schedule_and_time_grid():
    np.testing.assert_allclose(sd_betas(), UVIT["betas_1000"], rtol=1e-12)
    abar = np.cumprod(1 - sd_betas())
    for t, value in UVIT["alphas_cumprod_checks"].items():
        assert abar[int(t)] == pytest.approx(value, rel=1e-10)
    assert fast_orders(50) == UVIT["dpm_solver"]["orders"]
    torch.testing.assert_close(time_grid(50), torch.tensor(UVIT["dpm_solver"]["time_grid_t_continuous_51"]))


def toy_eps(calls):
    def eps(x, t_model):
        calls.append(float(t_model[0]))
        return 0.5 * x + 1e-4 * t_model[:, None, None, None]
    return eps


def test_uvit_golden_fast_dpm_solver_run():
    golden = UVIT["golden_toy_run"]
    x_T = torch.tensor(golden["x_T"])
    torch.testing.assert_close(x_T, torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0)))
    calls = []
    x_0 = dpm_solver_fast_sample(toy_eps(calls), x_T, 50)
    torch.testing.assert_close(x_0, torch.tensor(golden["x_0"]), rtol=0, atol=1e-4)
    np.testing.assert_allclose(calls, UVIT["dpm_solver"]["model_input_timesteps_in_call_order"], atol=1e-4)


def test_dpm_solver2_evaluates_at_step_start_then_logsnr_midpoint():
    calls = []
    dpm_solver2_sample(toy_eps(calls), torch.zeros(1, 1, 2, 2), 20)
    assert len(calls) == 20
    starts = np.asarray(calls[0::2]) / 1000
    np.testing.assert_allclose(starts, np.linspace(1, 1e-3, 11)[:-1], atol=1e-6)
    schedule = DiscreteVPSchedule()
    for i, mid in enumerate(np.asarray(calls[1::2]) / 1000):
        lam = schedule.lam(torch.tensor([starts[i], np.linspace(1, 1e-3, 11)[i + 1]], dtype=torch.float32))
        assert schedule.lam(torch.tensor([mid], dtype=torch.float32)).item() == pytest.approx(lam.mean().item(), abs=1e-4)


def test_sampler_configuration_errors():
    with pytest.raises(ValueError, match="odd"):
        check_sampler("dpm_solver2", "uvit", 21)
    with pytest.raises(ValueError, match="valid: ddim, ddpm, dpm_solver2, dpm_solver_fast"):
        check_sampler("euler", "dit", 20)
    with pytest.raises(ValueError, match="valid for dit: ddim, ddpm"):
        check_sampler("dpm_solver2", "dit", 20)
    assert check_sampler("dpm_solver2", "uvit", 20).family == "uvit"


def test_dpm_solver2_precomputed_steps_match_the_generic_update_bit_for_bit():
    """The device-side coefficient table reproduces `solver_update` (order 2, r1 = 1/2) exactly."""
    import torch

    from l2c_bench.sampling.dpm_solver import (
        DataPrediction,
        DiscreteVPSchedule,
        dpm_solver2_sample,
        solver_update,
        time_grid,
    )

    weights = torch.randn(4, 4, generator=torch.Generator().manual_seed(0)) * 0.1

    def denoise(x, t):  # any deterministic eps-model of x and t
        return torch.tanh(torch.einsum("nchw,cd->ndhw", x, weights) + t.view(-1, 1, 1, 1) / 1000.0)

    x = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    schedule = DiscreteVPSchedule()
    for nfe in (2, 10, 20):
        reference, grid, model_x0 = x.clone(), time_grid(nfe // 2), DataPrediction(denoise, schedule)
        for i in range(nfe // 2):
            reference = solver_update(model_x0, schedule, reference, grid[i : i + 1], grid[i + 1 : i + 2], 2, r1=0.5)
        assert torch.equal(dpm_solver2_sample(denoise, x.clone(), nfe), reference), nfe
