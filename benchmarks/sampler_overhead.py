"""Per-step overhead of our samplers vs the diffusers scheduler loops, measured in the same run.

The network is trivial (eps = 0.1 x), so the time is the sampler's own work: schedule bookkeeping,
coefficients and the elementwise update. Both sides use the same eps-model on the same VP table
(Stable Diffusion's scaled-linear betas), N steps, and include their set-up (diffusers' set_timesteps;
our sigma grid). Ours goes through `VPDenoiser` (sigma -> timestep lookup every call), diffusers
through `scale_model_input` + `step`. Time per step = median wall time of a full run / N.
Target (issue 3): ours <= 0.5x diffusers' time per step.

    .venv/bin/python benchmarks/sampler_overhead.py [--device cpu|cuda] [--steps 50] [--shape 1,4,32,32]
        [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    HeunDiscreteScheduler,
    UniPCMultistepScheduler,
)
from polydiff.core.precond import FlowDenoiser, VPDenoiser
from polydiff.core.samplers import sample
from polydiff.core.schedules import DiscreteSchedule, flow_sigmas

SD = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}


def net(x, t):
    return 0.1 * x


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _diffusers_run(make, n, x0):
    def run():
        sched = make()
        sched.set_timesteps(n, device=x0.device)
        x = x0 * sched.init_noise_sigma
        for t in sched.timesteps:
            x = sched.step(net(sched.scale_model_input(x, t), t), t, x).prev_sample
        return x
    return run


def direct_denoiser(x, sigma):
    """The same trivial model already in our convention: D = x - sigma * eps = (1 - 0.1 sigma) x ... kept
    as cheap as the eps-model (one op), so this column is the sampler loop's own cost."""
    return 0.9 * x


def _ours_run(method, n, x0, table, spacing, wrapped=True):
    denoiser = VPDenoiser(net, table) if wrapped else direct_denoiser

    def run():
        sigmas = table.sigmas(n, spacing)
        return sample(denoiser, x0 * float(sigmas[0]), sigmas, method, progress=False)
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--shape", default="1,4,32,32")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1: on a shared, busy CPU two spinning threads made a 256K-element "
                         "multiply 400x slower, which drowns the per-step overhead being measured)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device, n = torch.device(args.device), args.steps
    x0 = torch.randn(*map(int, args.shape.split(",")), generator=torch.Generator().manual_seed(0)).to(device)
    table = DiscreteSchedule.named("scaled_linear")

    rows = [
        ("euler", EulerDiscreteScheduler, "leading"),
        ("heun", HeunDiscreteScheduler, "leading"),
        ("ddim", lambda **k: DDIMScheduler(clip_sample=False, **k), "leading"),
        ("dpmpp_2m", DPMSolverMultistepScheduler, "linspace"),
        ("unipc", UniPCMultistepScheduler, "linspace"),
    ]
    print(f"sampler overhead per step: trivial eps-model, x {tuple(x0.shape)}, N = {n}, device {device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("us/step; 'sampler' = our loop with a denoiser in our convention, 'wrapped' = the eps-model through")
    print("VPDenoiser (sigma -> timestep each call); ratio = ours / diffusers, lower is better")
    print(f"{'method':<13} {'diffusers scheduler':<32} {'diffusers':>9} {'sampler':>8} {'ratio':>6} "
          f"{'wrapped':>8} {'ratio':>6}")
    for method, cls, spacing in rows:
        ref = _time(_diffusers_run(lambda c=cls, sp=spacing: c(timestep_spacing=sp, **SD), n, x0), device, args.repeats)
        bare = _time(_ours_run(method, n, x0, table, spacing, wrapped=False), device, args.repeats)
        ours = _time(_ours_run(method, n, x0, table, spacing), device, args.repeats)
        name = cls.__name__ if isinstance(cls, type) else "DDIMScheduler"
        print(f"{method:<13} {name:<32} {ref / n * 1e6:>9.1f} {bare / n * 1e6:>8.1f} {bare / ref:>6.2f} "
              f"{ours / n * 1e6:>8.1f} {ours / ref:>6.2f}")

    def flow_ref():
        sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
        sched.set_timesteps(n, device=device)
        x = x0.clone()
        for t in sched.timesteps:
            x = sched.step(net(x, t), t, x).prev_sample
        return x

    flow = FlowDenoiser(net, t_scale=1000.0)
    ref = _time(flow_ref, device, args.repeats)
    bare = _time(lambda: sample(direct_denoiser, x0, flow_sigmas(n, shift=3.0), "euler", progress=False),
                 device, args.repeats)
    ours = _time(lambda: sample(flow, x0, flow_sigmas(n, shift=3.0), "euler", progress=False), device, args.repeats)
    print(f"{'euler (flow)':<13} {'FlowMatchEulerDiscreteScheduler':<32} {ref / n * 1e6:>9.1f} "
          f"{bare / n * 1e6:>8.1f} {bare / ref:>6.2f} {ours / n * 1e6:>8.1f} {ours / ref:>6.2f}")
    print("(heun: a step is two model calls on both sides)")


if __name__ == "__main__":
    main()
