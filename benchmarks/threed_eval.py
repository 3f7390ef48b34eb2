"""Text to 3D on held-out prompts: `generate` (default settings, the shipped prior) against the truth.

The prompts are single primitives in shape-colour pairs the prior never saw in training
(`threed.dataset.heldout_combos`: every shape and colour word is known, the pair is new), written the
way a person types them ("a pink cube"). For each: IoU and Chamfer against the true shape after
normalising centre and scale, colour error (mean |RGB - palette colour| over the mesh's vertices),
whether the mesh's median colour is nearest to the prompt's colour in the palette (match), a Janus
check (`threed.janus.janus_score`, when that module is present: mean silhouette IoU of front, back and
sides against the true shape, and whether every view passes), wall time per asset and peak memory. The
same rows for the untrained field (baseline) and, with --ceiling, the field fitted directly to renders
of the true shape (`metrics.fit_ceiling`; benchmarks/threed_ceiling.py prints it for every shape).

    .venv/bin/python benchmarks/threed_eval.py [--limit 7] [--skip 0] [--iters N] [--ceiling] [--prior DIR] [--threads 2]

Time per asset is the wall time of `generate` (SDS + meshing) on this machine; peak memory is the
process's peak resident set on the CPU (cumulative over the run) or the peak allocated CUDA memory.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import numpy as np
import torch
from polydiff.threed.dataset import heldout_combos
from polydiff.threed.generate import Settings, generate
from polydiff.threed.mesh import extract_mesh
from polydiff.threed.metrics import evaluate_mesh, fit_ceiling, reference_mesh
from polydiff.threed.primitives import PALETTE, SHAPES, single


def peak_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def colour_matches(mesh, color: str) -> bool:
    """Is the palette colour nearest to the mesh's median vertex colour the prompt's colour?"""
    rgb = np.median(np.asarray(mesh.visual.vertex_colors)[:, :3] / 255.0, axis=0)
    nearest = min(PALETTE, key=lambda c: float(np.sum((np.asarray(PALETTE[c]) - rgb) ** 2)))
    return nearest == color


def janus(field, scene):
    try:
        from polydiff.threed.janus import janus_score
    except ImportError:
        return None
    return janus_score(field, scene)


def prompts(limit: int) -> list[tuple[str, str]]:
    """One held-out pair per shape first (in SHAPES order), then the second ones, up to `limit`."""
    held = sorted(heldout_combos(), key=lambda sc: (SHAPES.index(sc[0]), sc[1]))
    firsts = [next(p for p in held if p[0] == s) for s in SHAPES]
    rest = [p for p in held if p not in firsts]
    return (firsts + rest)[:limit]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=7, help="number of held-out prompts (14 exist)")
    ap.add_argument("--skip", type=int, default=0, help="skip the first N of them (to run the rest apart)")
    ap.add_argument("--iters", type=int, default=None, help="SDS iterations (default: generate's default)")
    ap.add_argument("--prior", default=None, help="prior folder (default: the shipped prior)")
    ap.add_argument("--ceiling", action="store_true", help="also fit the direct-fit ceiling per prompt")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = Settings() if args.iters is None else Settings(iters=args.iters)
    print(f"# machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"device {args.device}; generate: {settings.iters} iters x {settings.batch} views, cfg {settings.cfg_scale}, "
          f"mesh {settings.mesh_resolution}^3; held-out shape-colour pairs")
    header = (f"{'prompt':<20}{'method':<10}{'IoU':>7}{'Chamfer':>9}{'colour':>8}{'match':>7}{'janus':>8}"
              f"{'views':>7}{'sec':>8}{'peak MB':>9}")
    print(header)
    print("-" * len(header))
    rows: dict[str, list] = {"generate": [], "baseline": [], "ceiling": []}
    janus_missing = False
    for shape, color in prompts(args.limit)[args.skip:]:
        prompt = f"a {color} {shape}"
        scene = single(shape, color)
        ref = reference_mesh(scene)
        methods = ["baseline", "generate"] + (["ceiling"] if args.ceiling else [])
        for method in methods:
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            if method == "generate":
                asset = generate(prompt, prior=args.prior, settings=settings, seed=args.seed, device=args.device,
                                 progress_bar=False)
                field, mesh = asset
            elif method == "baseline":
                torch.manual_seed(args.seed)
                from polydiff.threed.field import RadianceField

                field = RadianceField(resolutions=tuple(settings.field_resolutions)).eval()
                mesh, _ = extract_mesh(field, settings.mesh_resolution)
            else:
                field, mesh, _ = fit_ceiling(scene, seed=args.seed, device=args.device,
                                             mesh_resolution=settings.mesh_resolution)
            sec = time.perf_counter() - t0
            m = evaluate_mesh(mesh, scene, reference=ref, seed=args.seed)
            m["match"] = colour_matches(mesh, color)
            j = janus(field, scene)
            janus_missing |= j is None
            m["janus"] = j["mean_iou"] if j else float("nan")
            m["janus_ok"] = bool(j and j["passed"])
            m["sec"] = sec
            rows[method].append(m)
            print(f"{prompt:<20}{method:<10}{m['iou']:>7.3f}{m['chamfer']:>9.3f}{m['color_error']:>8.3f}"
                  f"{'yes' if m['match'] else 'no':>7}{m['janus']:>8.3f}{'ok' if m['janus_ok'] else 'fail':>7}{sec:>8.1f}{peak_mb(args.device):>9.0f}",
                  flush=True)
    print("-" * len(header))
    for method, ms in rows.items():
        if ms:
            mean = {k: float(np.mean([m[k] for m in ms])) for k in ("iou", "chamfer", "color_error", "janus", "sec")}
            match, ok = sum(m["match"] for m in ms), sum(m["janus_ok"] for m in ms)
            print(f"{'mean':<20}{method:<10}{mean['iou']:>7.3f}{mean['chamfer']:>9.3f}{mean['color_error']:>8.3f}"
                  f"{f'{match}/{len(ms)}':>7}{mean['janus']:>8.3f}{f'{ok}/{len(ms)}':>7}{mean['sec']:>8.1f}")
    if janus_missing:
        print("# janus: polydiff.threed.janus is not available here; the column is nan")
    else:
        print("# janus: mean silhouette IoU over front/back/sides (threed.janus.janus_score); views: ok when "
              "every view passes its threshold")


if __name__ == "__main__":
    main()
