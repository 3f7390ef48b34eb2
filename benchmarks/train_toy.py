"""Toy-training benchmark: the core trainer on 2D toys, scored against the exact denoiser of the data.

    .venv/bin/python -m benchmarks.train_toy [--steps 1000 2000] [--toys 8gaussians checkerboard]

For each toy and step count: training wall time on this CPU, sliced W2 to fresh points of the toy of
the trained model's EMA samples and of the exact denoiser's samples (same sampler, same noise), and
their ratio (tests/test_train_toy.py asserts < 2 for 8gaussians at 1000 steps). Uses the test's model
and settings so the table describes what the test checks.
"""

from __future__ import annotations

import argparse
import platform
import tempfile

import torch

import tests.test_train_toy as toy
from polydiff.core.checkpoint import load_pretrained
from polydiff.core.precond import EDMPrecond


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[1000, 2000])
    ap.add_argument("--toys", nargs="+", default=["8gaussians", "checkerboard"])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s)")
    print(f"{'toy':<14}{'steps':>7}{'train s':>9}{'SW model':>10}{'SW exact':>10}{'ratio':>7}{'final loss':>12}")
    for name in args.toys:
        toy.TOY = name
        reference = toy.toy_points(name, toy.N_SAMPLES, torch.Generator().manual_seed(2)).double()
        for steps in args.steps:
            with tempfile.TemporaryDirectory() as tmp:
                data, result, seconds = toy.train_toy(tmp, steps=steps)
                net = load_pretrained(result.checkpoint, cls=toy.ToyDenoiserNet, use_ema=True)
            sw_model = toy.sw(toy.draw(EDMPrecond(net, sigma_data=toy.SIGMA_DATA)), reference)
            sw_exact = toy.sw(toy.draw(data.denoise), reference)
            loss = sum(result.losses[-100:]) / len(result.losses[-100:])
            print(f"{name:<14}{steps:>7}{seconds:>9.1f}{sw_model:>10.4f}{sw_exact:>10.4f}"
                  f"{sw_model / sw_exact:>7.2f}{loss:>12.3f}", flush=True)


if __name__ == "__main__":
    main()
