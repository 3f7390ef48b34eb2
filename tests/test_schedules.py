"""Schedules: grid properties for every N and spacing, closed forms, round trips, and diffusers' tables."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, EulerDiscreteScheduler
from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr as diffusers_rescale
from polydiff.core.schedules import (
    ContinuousVP,
    DiscreteSchedule,
    cosine_betas,
    exponential_sigmas,
    flow_sigmas,
    flow_t_to_sigma,
    karras_sigmas,
    rescale_zero_terminal_snr,
    sigma_to_flow_t,
    start_latent,
)

T = 1000


def _strict_grid(sig: torch.Tensor, n: int):
    assert len(sig) == n + 1 and sig[-1] == 0
    assert bool((sig[1:] < sig[:-1]).all()), "not strictly decreasing"
    assert len(torch.unique(sig)) == n + 1, "duplicates"


@pytest.mark.parametrize("zero_snr", [False, True])
def test_discrete_grids_every_n_every_spacing(zero_snr):
    sched = DiscreteSchedule.named("scaled_linear", zero_terminal_snr=zero_snr)
    table = sched.sigmas_table
    for n in range(1, T + 1):
        for spacing in ("leading", "linspace", "trailing"):
            sig = sched.sigmas(n, spacing)
            _strict_grid(sig, n)
            first = (n - 1) * (T // n) if spacing == "leading" else T - 1
            assert math.isclose(sig[0], table[first], rel_tol=1e-12), (n, spacing)
        assert sched.timesteps(n, "trailing")[-1] >= 0


def test_timesteps_equal_diffusers_for_every_n():
    """Leading / trailing timesteps equal EulerDiscreteScheduler's; linspace equals numpy's for n >= 2.
    (For 62 values of n diffusers' trailing grid has n + 1 timesteps ending at -1, an np.arange
    overshoot; there ours equals its first n.)"""
    for spacing in ("leading", "trailing"):
        ref = EulerDiscreteScheduler(timestep_spacing=spacing)
        for n in range(1, T + 1, 3):
            ref.set_timesteps(n)
            ours = DiscreteSchedule.named("linear").timesteps(n, spacing)
            assert torch.equal(ours.float(), ref.timesteps[:n].float()), (spacing, n)
    for n in range(2, T + 1, 7):
        ours = DiscreteSchedule.named("linear").timesteps(n, "linspace")
        assert np.allclose(ours.numpy(), np.linspace(0, T - 1, n)[::-1], atol=1e-9)


@pytest.mark.parametrize("name,ref_name", [("linear", "linear"), ("scaled_linear", "scaled_linear"),
                                           ("cosine", "squaredcos_cap_v2"), ("sigmoid", "sigmoid")])
def test_betas_equal_diffusers(name, ref_name):
    ours = DiscreteSchedule.named(name, **({} if name == "cosine" else {"beta_start": 1e-4, "beta_end": 0.02}))
    ref = DDPMScheduler(beta_schedule=ref_name, beta_start=1e-4, beta_end=0.02).alphas_cumprod.double()
    ours = ours.alphas_cumprod
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-7)


def test_zero_terminal_snr_rescale():
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, T, dtype=torch.float64) ** 2
    ours = rescale_zero_terminal_snr(betas)
    assert torch.allclose(ours, diffusers_rescale(betas.clone()), rtol=0, atol=1e-12)
    ab_old, ab_new = torch.cumprod(1 - betas, 0), torch.cumprod(1 - ours, 0)
    assert ab_new[-1] == 0 and abs(ab_new[0] - ab_old[0]) < 1e-15
    sched = DiscreteSchedule.from_betas(ours)
    assert math.isinf(sched.sigma_max) and sched.sigma_to_t(torch.tensor([math.inf])).item() == T - 1


def test_timestep_sigma_round_trip():
    sched = DiscreteSchedule.named("scaled_linear")
    t = torch.linspace(0, T - 1, 4001, dtype=torch.float64)
    assert torch.allclose(sched.sigma_to_t(sched.t_to_sigma(t)), t, atol=1e-9)
    knots = torch.arange(T, dtype=torch.float64)
    assert torch.allclose(sched.t_to_sigma(knots), sched.sigmas_table, rtol=1e-12)
    # log-linear between knots, like diffusers' _sigma_to_t
    mid = sched.t_to_sigma(torch.tensor([10.5], dtype=torch.float64))
    assert torch.allclose(mid, (sched.sigmas_table[10] * sched.sigmas_table[11]).sqrt())


@pytest.mark.parametrize("zero_snr", [False, True])
def test_sigma_to_t_device_path_equals_cpu_path(zero_snr):
    """The torch-op path (used off the CPU) and numpy's interp (used on the CPU) give the same timesteps."""
    sched = DiscreteSchedule.named("scaled_linear", zero_terminal_snr=zero_snr)
    g = torch.Generator().manual_seed(0)
    sigma = torch.cat([torch.exp(torch.empty(5000, dtype=torch.float64).uniform_(-8, 8, generator=g)),
                       sched.sigmas_table, torch.tensor([0.0, math.inf], dtype=torch.float64)])
    sigma = sigma[torch.isfinite(sigma) | zero_snr]
    assert torch.allclose(sched._sigma_to_t_torch(sigma), sched.sigma_to_t(sigma), rtol=0, atol=1e-9)
    big = sigma.repeat(20)   # the searchsorted branch for large inputs
    assert torch.allclose(sched._sigma_to_t_torch(big), sched.sigma_to_t(big), rtol=0, atol=1e-9)


@pytest.mark.parametrize("kind", ["linear", "scaled_linear", "cosine", "sigmoid"])
def test_continuous_vp(kind):
    sched = ContinuousVP(kind)
    t = torch.linspace(1e-3, 0.995, 997, dtype=torch.float64)
    assert torch.allclose(sched.sigma_to_t(sched.t_to_sigma(t)), t, atol=1e-9)
    assert torch.allclose(sched.alpha(t) ** 2 + sched.sigma_vp(t) ** 2, torch.ones_like(t))
    sig = sched.sigmas(50)
    assert bool((sig[1:] < sig[:-1]).all()) and sig[-1] == 0


def test_continuous_matches_discrete():
    """The continuous linear schedule is the T -> inf limit of DDPM's betas (log alpha_bar within 2% from
    t = 0.1 on; the discrete sum lags the integral by half a step);
    continuous cosine alpha_bar equals the discrete cumprod exactly wherever no beta is capped."""
    i = torch.arange(1, T + 1, dtype=torch.float64)
    disc = DiscreteSchedule.named("linear").alphas_cumprod
    cont = ContinuousVP("linear").alpha_bar(i / T)
    assert ((cont.log() / disc.log() - 1).abs()[T // 10:] < 0.02).all()
    disc = torch.cumprod(1 - cosine_betas(T), 0)[:-20]
    assert torch.allclose(ContinuousVP("cosine").alpha_bar(i[:-20] / T), disc, rtol=1e-10)
    assert math.isinf(ContinuousVP("sigmoid").t_to_sigma(torch.tensor(1.0)))


def test_karras_and_exponential_grids():
    for n in range(1, 301):
        sig = karras_sigmas(n, 0.002, 80.0, rho=7.0)
        _strict_grid(sig, n)
        assert math.isclose(sig[0], 80.0) and (n == 1 or math.isclose(sig[-2], 0.002))
        root = sig[:-1] ** (1 / 7)
        assert n < 3 or torch.allclose(root[1:] - root[:-1], (root[1] - root[0]).expand(n - 1))
        sig = exponential_sigmas(n, 0.01, 10.0)
        _strict_grid(sig, n)
        logs = sig[:-1].log()
        assert n < 3 or torch.allclose(logs[1:] - logs[:-1], (logs[1] - logs[0]).expand(n - 1))


def test_flow_grid_and_conversions():
    for n in range(1, 301):
        sig = flow_sigmas(n, shift=3.0)
        assert math.isinf(sig[0]) and sig[-1] == 0 and bool((sig[1:] < sig[:-1]).all())
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    assert torch.allclose(sigma_to_flow_t(flow_t_to_sigma(t)), t, atol=1e-12)
    # sigma = t / (1 - t) makes x0 + sigma eps a rescaling of (1 - t) x0 + t eps
    x0, eps, tt = torch.tensor(0.3, dtype=torch.float64), torch.tensor(-1.2, dtype=torch.float64), torch.tensor(0.7)
    s = flow_t_to_sigma(tt)
    assert torch.allclose((x0 + s * eps) / (1 + s), (1 - tt) * x0 + tt * eps)


def test_start_latent():
    noise = torch.randn(3, 2)
    assert torch.equal(start_latent(noise, flow_sigmas(4)), noise)
    assert torch.allclose(start_latent(noise, karras_sigmas(4, 0.1, 5.0)), noise * 5.0)


def test_bad_arguments():
    sched = DiscreteSchedule.named("linear")
    with pytest.raises(ValueError, match="spacing"):
        sched.sigmas(10, "uniform")
    with pytest.raises(ValueError, match="1..1000"):
        sched.sigmas(1001)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        karras_sigmas(10, 1.0, 0.5)
