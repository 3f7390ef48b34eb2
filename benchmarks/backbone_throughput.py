"""Training throughput of the core backbones: samples/s of forward + backward + AdamW step.

    .venv/bin/python benchmarks/backbone_throughput.py                 # CPU (and CUDA when present)
    .venv/bin/python benchmarks/backbone_throughput.py --seconds 10 --device cpu --threads 2

Each backbone is built at a stated size (its parameter count is printed), trained on random data with
the EDM preconditioning and loss shape a plugin would use (a random Condition of 16 text tokens of
width 384, MiniLM's, with its pooled vector), and timed after one warm-up step for `--seconds`
(at least 3 steps; the median step time is reported).
On CUDA the step runs in fp32 and under bf16 autocast. Absolute figures depend on the machine: quote
them with it (the table header names it).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from functools import partial

import torch
from polydiff.core.conditioning import Condition
from polydiff.core.transformer import DiT
from polydiff.core.unet import UNet1D, UNet2D

COND_DIM, COND_LEN = 384, 16

# name -> (constructor at the stated size, input shape of one sample, batch size)
BACKBONES = {
    "UNet1D mel 128x256": (partial(UNet1D, in_channels=128, channels=128, channel_mult=(1, 2, 2), num_res_blocks=2,
                                   attn_levels=(2,), cond_dim=COND_DIM, pooled_dim=COND_DIM), (128, 256), 16),
    "UNet2D image 3x32x32": (partial(UNet2D, in_channels=3, channels=64, channel_mult=(1, 2, 2), num_res_blocks=2,
                                     attn_levels=(2,), cond_dim=COND_DIM, pooled_dim=COND_DIM), (3, 32, 32), 16),
    "DiT seq 128x256 p2": (partial(DiT, in_channels=128, dim=256, depth=6, heads=4, patch_size=2,
                                   cond_dim=COND_DIM, pooled_dim=COND_DIM), (128, 256), 16),
    "DiT image 3x32x32 p2": (partial(DiT, in_channels=3, dim=256, depth=6, heads=4, patch_size=2, image=True,
                                     cond_dim=COND_DIM, pooled_dim=COND_DIM), (3, 32, 32), 16),
}


def throughput(build, shape, batch, device, seconds, autocast_dtype=None):
    torch.manual_seed(0)
    net = build().to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x0 = torch.randn(batch, *shape, device=device)
    cond = Condition(torch.randn(batch, COND_LEN, COND_DIM, device=device),
                     torch.ones(batch, COND_LEN, dtype=torch.bool, device=device),
                     torch.randn(batch, COND_DIM, device=device))
    sigma_data = 0.5

    def step():
        sigma = (torch.randn(batch, device=device) * 1.2 - 1.2).exp()
        s = sigma.view(-1, *[1] * len(shape))
        x = x0 + s * torch.randn_like(x0)
        c_in, c_out = (s**2 + sigma_data**2).rsqrt(), s * sigma_data * (s**2 + sigma_data**2).rsqrt()
        target = (x0 - sigma_data**2 / (s**2 + sigma_data**2) * x) / c_out
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = net(c_in * x, sigma.log() / 4, cond)
        loss = (out.float() - target).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step()  # warm-up: allocations, kernel selection
    sync()
    times, t_start = [], time.perf_counter()
    while len(times) < 3 or time.perf_counter() - t_start < seconds:
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    per_step = statistics.median(times)  # the median resists a step stalled by other load
    params = sum(p.numel() for p in net.parameters())
    return params, batch / per_step, per_step


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="timed seconds per backbone and setting")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cpu, plus cuda when present)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--batch", type=int, default=None, help="override every backbone's batch size")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

    print(f"machine: {cpu_name()}, {os.cpu_count()} logical CPUs, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}")
    if torch.cuda.is_available():
        print(f"cuda: {torch.cuda.get_device_name()}")
    print(f"{'backbone':<24} {'params':>9} {'device':>6} {'dtype':>6} {'batch':>5} {'s/step':>8} {'samples/s':>10}")
    for name, (build, shape, batch) in BACKBONES.items():
        batch = args.batch or batch
        for dev in devices:
            device = torch.device(dev)
            settings = [("fp32", None)] + ([("bf16", torch.bfloat16)] if device.type == "cuda" else [])
            for label, dtype in settings:
                params, rate, per_step = throughput(build, shape, batch, device, args.seconds, dtype)
                print(f"{name:<24} {params / 1e6:>8.2f}M {device.type:>6} {label:>6} {batch:>5} "
                      f"{per_step:>8.3f} {rate:>10.1f}", flush=True)


if __name__ == "__main__":
    main()
