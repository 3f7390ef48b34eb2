"""Step schedules fitted to one denoiser: the few-step grid whose ODE solution lands nearest the fine one.

A fixed grid (Karras rho 7, log-SNR uniform) spends its steps by a rule that suits images; at 10 steps
on sharply multimodal data most of them fall where the ODE is easy and few where modes split. Here the
grid is chosen for the denoiser at hand, in the spirit of "Align Your Steps" (Sabour et al. 2024), but
with the plainest objective an ODE solver has: from the same calibration noise, the mean squared
distance between the few-step solution and a many-step reference solution of the same sampler,

    loss(sigmas) = E_z || solve(D, sigma_max z, sigmas) - solve(D, sigma_max z, fine) ||^2 / dim.

The N - 1 interior sigmas are free (sigma_max is the start, the grid ends in 0); they are parameterised
as softplus log-decrements so every trial grid is strictly decreasing, and searched by Nelder-Mead
(derivative-free: samplers step in Python floats) from the Karras grid. The result is a plain tensor
to pass to `sample`; fit it once per model and sampler (seconds to minutes: each trial costs N
denoiser calls on the calibration batch) and reuse it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .samplers import sample
from .schedules import karras_sigmas


def _grid_from_params(p: np.ndarray, sigma_max: float) -> torch.Tensor:
    log_dec = np.logaddexp(0.0, p)                          # softplus: every decrement > 0
    inner = np.exp(math.log(sigma_max) - np.cumsum(log_dec))
    return torch.tensor(np.concatenate([[sigma_max], inner, [0.0]]), dtype=torch.float64)


def _params_from_grid(sigmas: torch.Tensor) -> np.ndarray:
    s = sigmas.double().cpu().numpy()[:-1]                  # drop the final 0
    dec = -np.diff(np.log(s))
    return np.log(np.expm1(dec))                            # softplus^-1


def optimize_sigmas(denoiser, noise: torch.Tensor, steps: int, sigma_max: float, method: str = "dpmpp_2m",
                    init: torch.Tensor | None = None, reference_steps: int = 500, sigma_min: float = 0.002,
                    max_evals: int = 2000, cond: dict | None = None) -> tuple[torch.Tensor, dict]:
    """Fit a `steps`-step grid (steps + 1 sigmas ending in 0) for `method` on `denoiser`.

    noise: (B, ...) unit Gaussian calibration batch (use a seed you do not evaluate on).
    init: starting grid (default Karras rho 7 from sigma_min to sigma_max); the reference solution is
    `reference_steps` Karras steps of the same method. Returns (sigmas, info) with the loss before and
    after and the number of trial grids; the fitted grid is never worse than `init` on the calibration batch.
    """
    from scipy.optimize import minimize

    if steps < 2:
        raise ValueError(f"steps must be >= 2 to have an interior sigma to place, got {steps}")
    if init is None:
        init = karras_sigmas(steps, sigma_min, sigma_max)
    if len(init) != steps + 1 or not math.isclose(float(init[0]), sigma_max, rel_tol=1e-6) or float(init[-1]) != 0:
        raise ValueError(f"init must hold {steps + 1} sigmas from sigma_max={sigma_max} down to 0")
    x0 = noise * sigma_max
    opts = {"progress": False} | ({"cond": cond} if cond else {})
    with torch.no_grad():
        target = sample(denoiser, x0, karras_sigmas(reference_steps, sigma_min, sigma_max).to(x0.dtype),
                        method, **opts)

        def loss(p):
            out = sample(denoiser, x0, _grid_from_params(p, sigma_max).to(x0.dtype), method, **opts)
            value = (out - target).pow(2).mean().item()
            return value if math.isfinite(value) else 1e30

        p0 = _params_from_grid(init)
        before = loss(p0)
        res = minimize(loss, p0, method="Nelder-Mead", options={"maxfev": max_evals, "xatol": 1e-4, "fatol": 1e-10})
    best = res.x if res.fun < before else p0
    info = {"loss_before": before, "loss_after": min(res.fun, before), "evals": int(res.nfev)}
    return _grid_from_params(best, sigma_max), info
