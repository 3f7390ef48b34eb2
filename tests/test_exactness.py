"""Exactness: with the exact GMM denoiser, samplers on fine grids reproduce the data distribution.

The noise floor is the sliced W2 between independent sets of true samples of the same size: a sampler
whose output is distributed exactly like the data gives a draw from that same distribution. With a
fixed set of projections and a fixed reference set, we accept anything below mean + 4 sd of the floor,
and check the test has teeth: Euler on a 10-step grid lands far above it.
"""

import pytest
import torch
from polydiff.core.samplers import sample
from polydiff.core.schedules import karras_sigmas
from polydiff.core.testbed import GaussianMixture, sliced_wasserstein


pytestmark = pytest.mark.usefixtures("one_thread")


N = 4000
MIX = GaussianMixture.random(2, 5, torch.Generator().manual_seed(0), spread=1.5, std_range=(0.3, 0.8))


def gen(seed):
    return torch.Generator().manual_seed(seed)


def sw(a, b):
    return sliced_wasserstein(a, b, 128, gen(123)).item()     # the same projections for every comparison


def floor_and_reference():
    ref = MIX.sample(N, gen(1))
    floors = torch.tensor([sw(MIX.sample(N, gen(100 + i)), ref) for i in range(8)])
    return ref, floors.mean().item() + 4 * floors.std().item()


def test_samplers_on_fine_grids_reach_the_true_sample_noise_floor():
    ref, bound = floor_and_reference()
    x = 80.0 * torch.randn(N, 2, generator=gen(2), dtype=torch.float64)
    fine = karras_sigmas(200, 0.002, 80.0)
    results = {}
    for method in ["euler", "heun", "dpmpp_2m", "dpmpp_3m", "unipc", "dpmpp_2m_sde", "ode_adaptive"]:
        out = sample(MIX, x, fine, method, generator=gen(3), progress=False)
        results[method] = sw(out, ref)
    assert all(v < bound for v in results.values()), (results, bound)
    coarse = sample(MIX, x, karras_sigmas(10, 0.002, 80.0), "euler", progress=False)
    assert sw(coarse, ref) > 2 * bound


def test_ode_samplers_agree_with_a_tight_adaptive_solution_from_the_same_noise():
    # a sharper, deterministic fact: same starting noise, same grid -> same PF-ODE solution
    x = 80.0 * torch.randn(300, 2, generator=gen(4), dtype=torch.float64)
    grid = karras_sigmas(200, 0.002, 80.0)
    exact = sample(MIX, x, grid, "ode_adaptive", rtol=1e-9, atol=1e-9)
    for method, tol in [("euler", 0.05), ("heun", 2e-3), ("dpmpp_2m", 2e-3), ("dpmpp_3m", 5e-4),
                        ("unipc", 5e-4)]:
        err = (sample(MIX, x, grid, method, progress=False) - exact).norm(dim=1).median().item()
        assert err < tol, (method, err)
