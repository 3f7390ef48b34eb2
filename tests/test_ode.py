"""Adaptive PF-ODE: closed-form Gaussian flow, tolerance behaviour, batch independence, exact likelihood."""

import math

import pytest
import torch
from polydiff.core.ode import integrate, log_likelihood, sample_ode_adaptive
from polydiff.core.samplers import sample
from polydiff.core.schedules import karras_sigmas
from polydiff.core.testbed import GaussianMixture


pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed):
    return torch.Generator().manual_seed(seed)


def gaussian_flow(x_start, mu, c2, s0, s1):
    """Closed-form PF-ODE for data N(mu, c2 I): x(s) - mu scales by sqrt((c2 + s^2) / (c2 + s0^2))."""
    return mu + (x_start - mu) * math.sqrt((c2 + s1**2) / (c2 + s0**2))


@pytest.mark.parametrize("solver", ["dopri5", "bosh3"])
def test_adaptive_sampler_follows_the_closed_form_gaussian_flow(solver):
    mu, c2 = 1.5, 0.25
    gauss = GaussianMixture([1.0], [[mu] * 3], [c2])
    sigmas = karras_sigmas(5, 0.01, 50.0)
    x = 50.0 * torch.randn(16, 3, generator=gen(0), dtype=torch.float64)
    errors, nfes = [], []
    for tol in ((1e-3, 1e-5, 1e-7) if solver == "dopri5" else (1e-3, 1e-4, 1e-5)):
        out, stats = sample_ode_adaptive(gauss, x, sigmas, rtol=tol, atol=tol, solver=solver, return_stats=True)
        at_min = gaussian_flow(x, mu, c2, 50.0, 0.01)
        exact = gauss.denoise(at_min, 0.01)                # the final denoise from sigma_min
        errors.append((out - exact).abs().max().item())
        nfes.append(stats.nfe)
        assert errors[-1] < 30 * tol                       # local tolerance -> global error, a few x
    assert errors[0] > errors[1] > errors[2] and nfes[0] < nfes[1] < nfes[2]


def test_adaptive_sampler_stops_early_when_the_grid_does_not_end_in_zero():
    gauss = GaussianMixture([1.0], [[0.0, 0.0]], [1.0])
    x = 10.0 * torch.randn(4, 2, generator=gen(1), dtype=torch.float64)
    out = sample(gauss, x, torch.tensor([10.0, 3.0, 0.5], dtype=torch.float64), "ode_adaptive", rtol=1e-8,
                 atol=1e-8)
    assert torch.allclose(out, gaussian_flow(x, 0.0, 1.0, 10.0, 0.5), atol=1e-6)


def test_adaptive_sampler_sample_does_not_depend_on_its_batch():
    mix = GaussianMixture.random(2, 4, gen(2))
    sigmas = karras_sigmas(10, 0.002, 80.0)
    x = 80.0 * torch.randn(6, 2, generator=gen(3), dtype=torch.float64)
    batch = sample_ode_adaptive(mix, x, sigmas)
    for i in range(6):
        assert torch.allclose(sample_ode_adaptive(mix, x[i:i + 1], sigmas), batch[i:i + 1], atol=1e-12)


def test_integrate_solves_a_known_ode_in_both_directions():
    # dy/ds = -k y  ->  y(s) = y0 exp(-k s); per-sample k, forward then back
    k = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64)
    y0 = torch.ones(3, dtype=torch.float64)
    (y1,) = integrate(lambda s, st: [-k * st[0]], [y0], 0.0, 2.0, rtol=1e-9, atol=1e-12)
    assert torch.allclose(y1, torch.exp(-2 * k), rtol=1e-8)
    (back,) = integrate(lambda s, st: [-k * st[0]], [y1], 2.0, 0.0, rtol=1e-9, atol=1e-12)
    assert torch.allclose(back, y0, rtol=1e-7)


def test_bad_arguments_raise_clear_errors():
    gauss = GaussianMixture([1.0], [[0.0]], [1.0])
    x = torch.zeros(2, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="unknown solver"):
        sample_ode_adaptive(gauss, x, karras_sigmas(3, 0.1, 1.0), solver="rk45")
    with pytest.raises(ValueError, match="strictly decreasing"):
        sample_ode_adaptive(gauss, x, torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match="sigma_min"):
        sample_ode_adaptive(gauss, x, karras_sigmas(3, 0.1, 1.0), sigma_min=5.0)
    with pytest.raises(ValueError, match="divergence"):
        log_likelihood(gauss, x, divergence="trace")


def test_log_likelihood_exact_divergence_matches_the_gmm_density():
    mix = GaussianMixture.random(2, 4, gen(4))
    x = torch.cat([mix.sample(24, gen(5)), 3 * torch.randn(8, 2, generator=gen(6), dtype=torch.float64)])
    sigma_min = 0.01
    result = log_likelihood(mix, x, sigma_min=sigma_min, sigma_max=500.0, rtol=1e-5, atol=1e-5)
    exact = mix.log_prob(x, sigma_min)
    assert (result.nats_per_dim - exact / 2).abs().max() < 0.02
    assert torch.allclose(result.bits_per_dim, -result.nats_per_dim / math.log(2))


def test_log_likelihood_hutchinson_is_unbiased_in_4d():
    mix = GaussianMixture.random(4, 3, gen(7), full=False)
    x = mix.sample(96, gen(8))
    exact = mix.log_prob(x, 0.02)
    est = log_likelihood(mix, x, sigma_min=0.02, sigma_max=300.0, divergence="hutchinson",
                         generator=gen(9), rtol=1e-4, atol=1e-4)
    diff = est.nats - exact
    # unbiased: the mean error is within 3 standard errors (plus the solver's own small error)
    assert diff.mean().abs() < 3 * diff.std() / math.sqrt(len(diff)) + 0.02
    assert diff.std() > 0.01                                   # it is an estimate, not the exact trace
