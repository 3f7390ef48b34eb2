"""Samplers on Gaussian data, where everything is closed form.

For x0 ~ N(mu, v) (per dimension) the exact denoiser is D(x, s) = mu + v / (v + s^2) (x - mu) and the
probability-flow ODE dx/ds = (x - D) / s is solved by x(s) = mu + (x(S) - mu) sqrt((s^2 + v) / (S^2 + v)).
Checked: the global error's log-log slope against the number of steps (the order of each ODE method),
the sampled distribution of the stochastic methods, and the sampler contract (per-sample generators,
DDPM = DDIM(eta=1), dtypes, argument checks, callbacks).
"""

import math

import pytest
import torch
from polydiff.core.runtime import generators
from polydiff.core.samplers import sample
from polydiff.core.schedules import flow_sigmas, karras_sigmas

MU = torch.tensor([0.5, -1.0, 0.0, 2.0], dtype=torch.float64)
VAR = torch.tensor([0.25, 1.0, 0.05, 2.0], dtype=torch.float64)


def gaussian_denoiser(x, sigma):
    s2 = sigma.reshape(-1, 1) ** 2
    mu, var = MU.to(x), VAR.to(x)
    return mu + var / (var + s2) * (x - mu)


def exact_flow(x_start, s_start, s_end):
    return MU + (x_start - MU) * torch.sqrt((s_end**2 + VAR) / (s_start**2 + VAR))


@pytest.mark.parametrize("method,order", [("euler", 1), ("ddim", 1), ("heun", 2), ("dpmpp_2m", 2),
                                          ("dpmpp_3m", 3), ("unipc", 3)])
def test_convergence_order(method, order):
    """Slope of log(max error) vs log(steps) over N = 64, 128, 256 on a Karras grid from 80 to 0.05
    (stopping at 0.05: the step to 0 would add the same last-step error for every N)."""
    s_max, s_min = 80.0, 0.05
    z = torch.randn(256, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x_start = z * s_max
    target = exact_flow(x_start, s_max, s_min)
    ns, errs = [64, 128, 256], []
    for n in ns:
        x = sample(gaussian_denoiser, x_start, karras_sigmas(n, s_min, s_max)[:-1], method)
        errs.append((x - target).abs().max().item())
    logn, loge = torch.log(torch.tensor(ns, dtype=torch.float64)), torch.log(torch.tensor(errs))
    slope = -(((logn - logn.mean()) * (loge - loge.mean())).sum() / ((logn - logn.mean()) ** 2).sum()).item()
    assert abs(slope - order) <= 0.2, f"{method}: slope {slope:.2f}, errors {errs}"


def test_step_to_zero_returns_the_denoiser_output():
    """A final sigma of 0 is handled exactly: running to 0 equals running to sigmas[-2] and denoising."""
    z = torch.randn(64, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sigmas = karras_sigmas(20, 0.002, 80.0)
    s_last = sigmas[-2:-1]
    for method in ("euler", "ddim", "heun", "dpmpp_2m", "dpmpp_3m", "unipc"):
        full = sample(gaussian_denoiser, z * 80.0, sigmas, method)
        stop = sample(gaussian_denoiser, z * 80.0, sigmas[:-1], method)
        assert torch.equal(full, gaussian_denoiser(stop, s_last.expand(64))), method


@pytest.mark.parametrize("method,opts", [("ddpm", {}), ("euler_ancestral", {}), ("ddim", {"eta": 0.5}),
                                         ("dpmpp_2m_sde", {}), ("sde_euler_maruyama", {}),
                                         ("heun", {"s_churn": 10.0})])
def test_stochastic_samplers_sample_the_data_distribution(method, opts):
    """4096 samples after 250 steps have the data's mean and variance (4-sigma sampling bounds plus a
    small discretisation allowance)."""
    n = 4096
    g = torch.Generator().manual_seed(2)
    sigmas = karras_sigmas(250, 0.01, 80.0)
    x = torch.randn(n, 4, generator=g, dtype=torch.float64) * 80.0
    out = sample(gaussian_denoiser, x, sigmas, method, generator=g, **opts)
    mean_tol = 4 * (VAR / n).sqrt() + 0.01
    var_rel = 4 * math.sqrt(2 / n) + 0.03
    assert ((out.mean(0) - MU).abs() <= mean_tol).all(), out.mean(0)
    assert ((out.var(0) / VAR - 1).abs() <= var_rel).all(), out.var(0) / VAR


def test_ddpm_is_ddim_with_eta_one():
    """Two different formulas (posterior mean/variance vs DDIM's eta split), one update."""
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 10
    sigmas = karras_sigmas(12, 0.01, 10.0)
    a = sample(gaussian_denoiser, x, sigmas, "ddpm", generator=torch.Generator().manual_seed(4))
    b = sample(gaussian_denoiser, x, sigmas, "ddim", generator=torch.Generator().manual_seed(4), eta=1.0)
    assert torch.allclose(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ["ddpm", "ddim", "euler_ancestral", "dpmpp_2m_sde", "sde_euler_maruyama",
                                    "heun", "dpmpp_2m"])
def test_per_sample_generators_make_samples_batch_independent(method):
    opts = {"eta": 0.7} if method == "ddim" else {"s_churn": 5.0} if method == "heun" else {}
    sigmas = karras_sigmas(8, 0.01, 20.0)
    noise = torch.randn(5, 4, generator=torch.Generator().manual_seed(5))
    batch = sample(gaussian_denoiser, noise * 20.0, sigmas, method, generator=generators(11, 5), **opts)
    alone = sample(gaussian_denoiser, noise[3:4] * 20.0, sigmas, method, generator=generators(11, 5)[3:4], **opts)
    assert torch.allclose(batch[3:4], alone, rtol=0, atol=1e-6)


def test_pure_noise_start_is_the_limit_of_a_large_finite_start():
    """sigmas[0] = inf with x = unit noise equals starting at a huge finite sigma with x = noise * sigma
    for the one-step methods. (Multistep methods reach their inf limit only like 1 / log(sigma_0), through
    the step-size ratio of their second step, and Heun's correction has no finite limit; from inf every
    method takes the same closed-form first step, checked against diffusers in test_samplers_reference.)"""
    noise = torch.randn(6, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    grid = flow_sigmas(10, shift=2.0)
    assert math.isinf(grid[0])
    big = grid.clone()
    big[0] = 1e9
    for method in ("euler", "ddim"):
        a = sample(gaussian_denoiser, noise, grid, method)
        b = sample(gaussian_denoiser, noise * 1e9, big, method)
        assert torch.allclose(a, b, rtol=0, atol=1e-6), method


def test_dtype_is_kept_and_fp32_agrees_with_fp64():
    sigmas = karras_sigmas(20, 0.002, 80.0)
    z = torch.randn(16, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64) * 80
    for method in ("dpmpp_2m", "heun", "unipc"):
        out64 = sample(gaussian_denoiser, z, sigmas, method)
        out32 = sample(gaussian_denoiser, z.float(), sigmas.float(), method)
        assert out64.dtype == torch.float64 and out32.dtype == torch.float32
        assert (out64 - out32.double()).abs().max() < 1e-4


def test_denoiser_sees_batch_sigmas_and_callback_sees_every_step():
    seen, steps = [], []

    def denoiser(x, sigma, scale):
        seen.append((sigma.shape, sigma.dtype))
        return x * scale

    sigmas = karras_sigmas(5, 0.1, 10.0)
    sample(denoiser, torch.ones(3, 2), sigmas, "dpmpp_2m", cond={"scale": 0.5}, callback=lambda d: steps.append(d["i"]))
    assert seen == [(torch.Size([3]), torch.float32)] * 5 and steps == [0, 1, 2, 3, 4]


def test_bad_arguments_raise_clear_errors():
    x = torch.ones(2, 2)
    with pytest.raises(ValueError, match="strictly decreasing"):
        sample(gaussian_denoiser, x, torch.tensor([1.0, 1.0, 0.0]), "euler")
    with pytest.raises(ValueError, match="unknown sampler"):
        sample(gaussian_denoiser, x, torch.tensor([1.0, 0.0]), "rk45")
    with pytest.raises(TypeError, match="options are"):
        sample(gaussian_denoiser, x, torch.tensor([1.0, 0.0]), "euler", eta=1.0)
    with pytest.raises(ValueError, match="only sigmas\\[0\\] may be inf"):
        sample(gaussian_denoiser, x, torch.tensor([5.0, math.inf, 0.0]), "euler")
