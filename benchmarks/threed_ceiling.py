"""Ceiling and baseline for text-to-3D on the primitive world, without any diffusion prior.

For each single primitive: fit the radiance field directly to shaded renders of the true shape
(photometric MSE; `polydiff.threed.metrics.fit_ceiling`), mesh it with the automatic surface rule, and
measure IoU / Chamfer / colour error against the true shape after normalising centre and scale. The
baseline is the untrained field (density blob at the centre, random albedo) meshed the same way.
The floor row is the true shape's own reference mesh resampled: the Chamfer floor of the sampling.

    .venv/bin/python benchmarks/threed_ceiling.py [--iters 300] [--shapes cube,sphere] [--threads 1]

Prints a table; time per asset is wall time of fit + meshing + metrics on this machine, peak memory is
the process's peak resident set (CPU) or peak allocated CUDA memory.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import torch
from polydiff.threed.metrics import evaluate_mesh, fit_ceiling, reference_mesh
from polydiff.threed.primitives import SHAPES, single

COLOR_OF = {"cube": "red", "sphere": "blue", "cylinder": "green", "cone": "orange", "torus": "purple",
            "pyramid": "yellow", "capsule": "cyan"}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--image-resolution", type=int, default=32)
    ap.add_argument("--mesh-resolution", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    print(f"# machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
          f"device {args.device}; fit: {args.iters} iters, {args.image_resolution}px views, "
          f"mesh {args.mesh_resolution}^3")
    header = f"{'shape':<10}{'method':<10}{'IoU':>7}{'Chamfer':>9}{'colour':>8}{'sec':>8}{'peak MB':>9}"
    print(header)
    print("-" * len(header))
    rows = {"baseline": [], "ceiling": []}
    for shape in shapes:
        scene = single(shape, COLOR_OF[shape])
        ref = reference_mesh(scene)
        floor = evaluate_mesh(ref, scene, reference=reference_mesh(scene, 97), seed=args.seed + 7)
        print(f"{shape:<10}{'floor':<10}{floor['iou']:>7.3f}{floor['chamfer']:>9.3f}{'':>8}{'':>8}{'':>9}")
        for method, iters in (("baseline", 0), ("ceiling", args.iters)):
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            _, mesh, _stats = fit_ceiling(scene, iters=iters, image_resolution=args.image_resolution,
                                         mesh_resolution=args.mesh_resolution, seed=args.seed, device=args.device)
            m = evaluate_mesh(mesh, scene, reference=ref, seed=args.seed)
            sec = time.perf_counter() - t0
            peak = (torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else peak_rss_mb())
            rows[method].append(m)
            print(f"{shape:<10}{method:<10}{m['iou']:>7.3f}{m['chamfer']:>9.3f}{m['color_error']:>8.3f}"
                  f"{sec:>8.1f}{peak:>9.0f}", flush=True)
    print("-" * len(header))
    for method, ms in rows.items():
        if ms:
            mean = {k: sum(m[k] for m in ms) / len(ms) for k in ("iou", "chamfer", "color_error")}
            print(f"{'mean':<10}{method:<10}{mean['iou']:>7.3f}{mean['chamfer']:>9.3f}{mean['color_error']:>8.3f}")


if __name__ == "__main__":
    main()
