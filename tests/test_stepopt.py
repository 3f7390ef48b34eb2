"""Fitted step grids: valid grids, and a smaller ODE error than the Karras grid on noise they never saw."""

import pytest
import torch
from polydiff.core.samplers import sample
from polydiff.core.schedules import karras_sigmas
from polydiff.core.stepopt import optimize_sigmas
from polydiff.core.testbed import GaussianMixture


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_fitted_grid_beats_karras_on_held_out_noise():
    mix = GaussianMixture.ring(8, radius=2.0, std=0.2)
    calib = torch.randn(400, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grid, info = optimize_sigmas(mix, calib, steps=8, sigma_max=80.0, reference_steps=200, max_evals=400)
    assert grid.shape == (9,) and grid[0] == 80.0 and grid[-1] == 0.0
    assert bool((grid[:-1] > grid[1:]).all())
    assert info["loss_after"] <= info["loss_before"]

    test = 80.0 * torch.randn(2000, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ref = sample(mix, test, karras_sigmas(200, 0.002, 80.0), "dpmpp_2m", progress=False)

    def err(sigmas):
        return (sample(mix, test, sigmas, "dpmpp_2m", progress=False) - ref).pow(2).mean().item()

    assert err(grid) < 0.5 * err(karras_sigmas(8, 0.002, 80.0))


def test_bad_arguments_are_refused():
    mix = GaussianMixture.ring(4, radius=1.0, std=0.2)
    z = torch.randn(10, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="steps must be >= 2"):
        optimize_sigmas(mix, z, steps=1, sigma_max=10.0)
    with pytest.raises(ValueError, match="init must hold"):
        optimize_sigmas(mix, z, steps=4, sigma_max=10.0, init=karras_sigmas(5, 0.01, 10.0))
