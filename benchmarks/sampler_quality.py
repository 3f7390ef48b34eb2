"""Sampler quality per NFE on two Gaussian-mixture testbeds with the exact denoiser.

For every sampler and each NFE budget (5, 10, 20, 50, 1000 denoiser calls), the sliced W2 between
its samples and true samples of the mixture. The denoiser is exact, so what is left is the solver's
discretisation error (plus sampling noise, shown as the floor: SW2 between two independent sets of
true samples of the same size). Rows:
  noise floor        SW2(true, true') (mean of 3 pairs): the best any sampler can show
  <method>           one cell per NFE budget: "SW2 (steps)"
  ode_adaptive       the adaptive PF-ODE solver at several tolerances, with the NFE it used
  dpmpp_2m NFE 10    the target cell again on Karras grids with a larger sigma_min (grid sensitivity)
  fitted grid        the target cell on a 10-step grid fitted to this denoiser by
                     `polydiff.core.stepopt.optimize_sigmas` (calibration noise from another seed)

NFE is counted as denoiser calls on the batch (counted, not assumed): for each method the largest
number of Karras steps whose run makes at most that many calls (heun: 2 per step minus 1, since its
last step to 0 is an Euler step; all the others: 1 per step). Budgets a method cannot hit (heun at an
even count) use one call fewer. All methods start from the same noise; grid: Karras sigmas, rho 7,
sigma_min 0.002, sigma_max 80 (the data scale is about 1).

Testbeds: "ring8": 8 modes on a circle of radius 2, std 0.2 (2-D); "gmm16": 10 random modes with full
covariances (std 0.2-0.6 along random axes) in 16-D, means ~ N(0, 1.5^2 I).
Target (issue 3): dpmpp_2m at 10 NFE within 1.1x of its 1000-step value.

Reading the table: values at or below the floor are sampling noise. All deterministic samplers start
from the same noise, so their converged values are one shared draw (they can sit a little above or
below the floor together); stochastic samplers add their own noise and are independent draws.
Takes ~25 min on a busy 2-core CPU at --n 10000 (the 16-D mixture dominates); --n 2000 for a quick look.

    .venv/bin/python benchmarks/sampler_quality.py --n 10000
"""

from __future__ import annotations

import argparse
import time

import torch
from polydiff.core.samplers import METHODS, sample
from polydiff.core.schedules import karras_sigmas
from polydiff.core.stepopt import optimize_sigmas
from polydiff.core.testbed import GaussianMixture, sliced_wasserstein

BUDGETS = (5, 10, 20, 50, 1000)
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


class Counted:
    """The denoiser with a call counter."""

    def __init__(self, denoiser):
        self.denoiser, self.calls = denoiser, 0

    def __call__(self, x, sigma, **cond):
        self.calls += 1
        return self.denoiser(x, sigma, **cond)


def nfe_of(method, steps, mix):
    counted = Counted(mix)
    x = SIGMA_MAX * torch.randn(2, mix.dim, dtype=torch.float64)
    sample(counted, x, karras_sigmas(steps, SIGMA_MIN, SIGMA_MAX), method, progress=False)
    return counted.calls


def steps_for(method, budget, mix):
    """The most steps whose run costs at most `budget` calls."""
    steps = budget
    while steps > 1 and nfe_of(method, steps, mix) > budget:
        steps -= 1
    return steps


def testbeds(seed):
    g = torch.Generator().manual_seed(seed)
    return {
        "ring8": GaussianMixture.ring(8, radius=2.0, std=0.2),
        "gmm16": GaussianMixture.random(16, 10, g, spread=1.5, std_range=(0.2, 0.6)),
    }


def run_testbed(name, mix, n, seed, device, projections):
    def sw(a, b):
        return sliced_wasserstein(a, b, projections, torch.Generator().manual_seed(seed + 1)).item()

    ref = mix.sample(n, torch.Generator().manual_seed(seed + 2), device=device)
    floor = sum(sw(mix.sample(n, torch.Generator().manual_seed(seed + 10 + i), device=device), ref)
                for i in range(3)) / 3
    noise = SIGMA_MAX * torch.randn(n, mix.dim, generator=torch.Generator().manual_seed(seed + 3),
                                    dtype=torch.float64).to(device)
    print(f"\n## {name}: d={mix.dim}, {mix.n_components} modes, n={n}; SW2 ({projections} projections), "
          f"cells 'SW2 (steps)'")
    print(f"{'method':<20}" + "".join(f"{'NFE ' + str(b):>16}" for b in BUDGETS))
    print(f"{'noise floor':<20}" + f"{floor:>16.4f}" * len(BUDGETS))
    table = {}
    for method in [m for m in METHODS if m != "ode_adaptive"]:
        cells = []
        for budget in BUDGETS:
            steps = steps_for(method, budget, mix) if budget <= 50 else \
                (budget + 1) // 2 if method == "heun" else budget
            out = sample(mix, noise, karras_sigmas(steps, SIGMA_MIN, SIGMA_MAX).to(device), method,
                         generator=torch.Generator(device=device).manual_seed(seed + 4), progress=False)
            table[method, budget] = sw(out, ref)
            cells.append(f"{table[method, budget]:.4f} ({steps})")
        print(f"{method:<20}" + "".join(f"{c:>16}" for c in cells))
    cells = []
    for tol in (1e-2, 1e-3, 1e-4, 1e-5):
        out, stats = sample(mix, noise, karras_sigmas(10, SIGMA_MIN, SIGMA_MAX).to(device), "ode_adaptive",
                            rtol=tol, atol=tol, return_stats=True)
        cells.append(f"tol {tol:.0e}: {sw(out, ref):.4f} @ {stats.nfe} NFE")
    print(f"{'ode_adaptive':<20}" + "; ".join(cells))
    cells = []
    for sigma_min in (0.002, 0.01, 0.02, 0.05):                # grid sensitivity of the target cell
        out = sample(mix, noise, karras_sigmas(10, sigma_min, SIGMA_MAX).to(device), "dpmpp_2m", progress=False)
        cells.append(f"sigma_min {sigma_min:g}: {sw(out, ref):.4f}")
    print(f"{'dpmpp_2m NFE 10':<20}" + "; ".join(cells))
    calib = torch.randn(1000, mix.dim, generator=torch.Generator().manual_seed(seed + 99), dtype=torch.float64)
    t0 = time.time()
    grid, info = optimize_sigmas(mix, calib.to(device), 10, SIGMA_MAX, "dpmpp_2m")
    fitted = sw(sample(mix, noise, grid.to(device), "dpmpp_2m", progress=False), ref)
    print(f"{'fitted grid':<20}dpmpp_2m NFE 10: {fitted:.4f}  (fit {time.time() - t0:.0f} s, {info['evals']} trial "
          f"grids; grid {', '.join(f'{v:.3g}' for v in grid.tolist())})")
    for label, value in (("Karras grid", table["dpmpp_2m", 10]), ("fitted grid", fitted)):
        ratio = value / table["dpmpp_2m", 1000]
        verdict = "met" if ratio <= 1.1 else "NOT met"
        print(f"target dpmpp_2m NFE 10 ({label}) / NFE 1000 = {value:.4f} / {table['dpmpp_2m', 1000]:.4f}"
              f" = {ratio:.2f}x (target <= 1.1x: {verdict})")
    return table, floor


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000, help="samples per set")
    ap.add_argument("--projections", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)")
    ap.add_argument("--testbeds", default="ring8,gmm16")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    beds = testbeds(args.seed)
    start = time.time()
    for name in args.testbeds.split(","):
        if name not in beds:
            raise SystemExit(f"unknown testbed {name!r}; use {', '.join(beds)}")
        run_testbed(name, beds[name], args.n, args.seed, torch.device(args.device), args.projections)
    print(f"\n({time.time() - start:.0f} s on {args.device}, fp64)")


if __name__ == "__main__":
    main()
