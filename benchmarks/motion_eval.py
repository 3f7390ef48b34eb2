"""Text-to-motion figures: the shipped checkpoint against ground truth and random baselines, and speed.

    .venv/bin/python benchmarks/motion_eval.py [--clips 100] [--checkpoint DIR] [--no-evaluator]

Data: the test split of the procedural corpus (.cache/motion_corpus_s0_n3000, built if missing), whose
first caption per clip comes from held-out paraphrase templates that no training caption uses. Each
generated motion has its clip's length. Rows:
* ground truth: the test clips themselves;
* shuffled: each clip's labels checked on another clip's motion (real motion, wrong text);
* noise features: N(Mean, Std) features recovered to joints (random motion);
* ours, held-out paraphrases / training templates: generated for that caption (default sampler);
* ours, unconditional: cfg 0 (the model without text), a check that the accuracy comes from the text;
skating columns before and after foot-lock. Attribute accuracy is per action label, checked on the
skeleton with the boundaries allowed to move (metrics.check_sequence).
Then R-precision (pool 32) and an FID analogue from OUR contrastive motion-text evaluator (trained on
this corpus; not the T2M evaluator, not comparable with HumanML3D papers), and the speed of one
196-frame motion at batch 1 with the default sampler against 1000-step DDPM sampling, in one run.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
from polydiff.motion import corpus, footlock, metrics
from polydiff.motion import pipeline as pl
from polydiff.motion.features import features_to_joints
from polydiff.motion.train import CACHE, DataConfig, corpus_root


def accuracy(pairs) -> float:
    res = [r for labels, j in pairs for r in metrics.check_sequence(labels, j)]
    return float(np.mean(res))


def row(name, pairs, locked=None):
    joints = [j for _, j in pairs]
    skate = np.mean([metrics.skating_ratio(j) for j in joints])
    skate_l = np.mean([metrics.skating_ratio(j) for j in locked]) if locked is not None else float("nan")
    jerk = np.mean([metrics.jerk(j) for j in joints])
    return f"| {name} | {accuracy(pairs):.3f} | {skate:.4f} | {skate_l:.4f} | {jerk:.1f} |"


def generate_all(prompts, lengths, args, cfg=None, batch=25):
    out = []
    for i in range(0, len(prompts), batch):
        ms = pl.generate_batch(prompts[i:i + batch], [n / 20.0 for n in lengths[i:i + batch]], seed=args.seed + i,
                               steps=args.steps, cfg=args.cfg if cfg is None else cfg, sampler=args.sampler,
                               checkpoint=args.checkpoint)
        out += ms
    return out


def timed(fn, repeats=3):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=100, help="test clips to evaluate")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=4.0)
    ap.add_argument("--sampler", default="dpmpp_2m")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-evaluator", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    root = corpus_root(DataConfig())
    names = (root / "test.txt").read_text().split()[: args.clips]
    clips = [corpus.load_clip(root, n) for n in names]
    mean, std = np.load(root / "Mean.npy"), np.load(root / "Std.npy")
    labels = [m["actions"] for _, _, m in clips]
    lengths = [len(f) for f, _, _ in clips]
    heldout = [m["captions"][m["caption_templates"].index("heldout")] for _, _, m in clips]
    seen = [m["captions"][m["caption_templates"].index("train")] for _, _, m in clips]

    gt = [(lb, j) for lb, (_, j, _) in zip(labels, clips)]
    rng = np.random.default_rng(args.seed)
    perm = np.roll(np.arange(len(gt)), 1)
    shuffled = [(gt[i][0], gt[p][1]) for i, p in enumerate(perm)]
    noise = [(lb, features_to_joints(torch.from_numpy(mean + std * rng.standard_normal((n, 263)).astype(np.float32))
                                     .double()).numpy()) for lb, n in zip(labels, lengths)]

    t0 = time.perf_counter()
    gen_h = generate_all(heldout, lengths, args)
    gen_s = generate_all(seen, lengths, args)
    gen_u = generate_all(heldout, lengths, args, cfg=0.0)
    gen_time = time.perf_counter() - t0
    ours_h = [(lb, m.joints[0]) for lb, m in zip(labels, gen_h)]
    ours_s = [(lb, m.joints[0]) for lb, m in zip(labels, gen_s)]
    ours_u = [(lb, m.joints[0]) for lb, m in zip(labels, gen_u)]
    lock = lambda pairs: [footlock.foot_lock(j) for _, j in pairs]

    print(f"## text-to-motion, {len(gt)} test clips of the procedural corpus ({root.name}); "
          f"{args.sampler} {args.steps} steps, cfg {args.cfg}\n")
    print("| motion | attribute acc. | skating | skating after foot-lock | jerk (m/s^3) |")
    print("|---|---|---|---|---|")
    print(row("ground truth", gt, lock(gt)))
    print(row("shuffled (other clip's motion)", shuffled))
    print(row("noise features (random motion)", noise))
    print(row("ours, held-out paraphrases", ours_h, lock(ours_h)))
    print(row("ours, training templates", ours_s, lock(ours_s)))
    print(row("ours, unconditional (cfg 0)", ours_u))
    print(f"\n(generation of {3 * len(gt)} motions: {gen_time:.0f} s)")

    per_action: dict[str, list] = {}
    for lbs, (_, j) in zip(labels, ours_h):
        for lb, ok in zip(lbs, metrics.check_sequence(lbs, j)):
            per_action.setdefault(lb["action"], []).append(ok)
    print("ours (held-out) per action: " + ", ".join(f"{a} {np.mean(v):.2f} (n={len(v)})"
                                                      for a, v in sorted(per_action.items())))

    if not args.no_evaluator:
        from polydiff.core.text import TextEncoder
        from polydiff.motion.evaluator import (
            embed_motions,
            embed_texts,
            frechet_distance,
            r_precision,
            train_evaluator,
        )

        enc = TextEncoder(cache_size=10**6)
        t0 = time.perf_counter()
        ev = train_evaluator(root, CACHE / f"motion_evaluator_{root.name}", enc).eval()
        ev_time = time.perf_counter() - t0
        text_h = embed_texts(ev, enc, heldout)
        e_gt = embed_motions(ev, [f for f, _, _ in clips])
        e_h = embed_motions(ev, [m.features[0] for m in gen_h])
        e_u = embed_motions(ev, [m.features[0] for m in gen_u])
        e_n = embed_motions(ev, [mean + std * rng.standard_normal((n, 263)).astype(np.float32) for n in lengths])
        print(f"\n## OUR contrastive evaluator (trained on this corpus in {ev_time:.0f} s; not the T2M evaluator)\n")
        print("| motion (held-out captions) | R-precision top-1 | top-2 | top-3 | FID analogue vs ground truth |")
        print("|---|---|---|---|---|")
        for name, e in (("ground truth", e_gt), ("ours", e_h), ("ours, unconditional", e_u), ("noise features", e_n)):
            r = r_precision(e, text_h)
            print(f"| {name} | {r[0]:.3f} | {r[1]:.3f} | {r[2]:.3f} | {frechet_distance(e_gt, e):.3f} |")

    # BVH round trip of generated motions: export (IK) -> independent reader -> FK
    import tempfile

    from polydiff.motion import bvh
    from polydiff.motion.skeleton import JOINT_NAMES

    fit_err, read_err = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k, m in enumerate(gen_h[:10]):
            path, encoded = bvh.export_bvh(Path(tmp) / f"{k}.bvh", m.joints[0], clean_feet=True)
            back = bvh.read_bvh(path)
            pos = back["positions"][:, [back["names"].index(n) for n in JOINT_NAMES]]
            read_err.append(np.linalg.norm(pos - encoded, axis=-1).mean())
            fit_err.append(np.linalg.norm(encoded - footlock.foot_lock(m.joints[0]), axis=-1).mean())
    print(f"\nBVH of 10 generated motions -> independent reader -> FK: MPJPE vs the exported rig "
          f"{np.max(read_err) * 1000:.4f} mm (max); rigid IK fit vs the foot-locked joints {np.mean(fit_err) * 1000:.1f} mm (mean)")

    # a long sequence (> 60 s) by chaining windows; smoothness at the joins vs inside the windows
    segs = [("a person walks forward", 20.0), ("someone jogs in a circle", 15.0), ("a person waves the right hand", 12.0),
            ("a person walks backwards slowly", 16.0)]
    t0 = time.perf_counter()
    long = pl.generate_long(segs, transition=1.0, steps=args.steps, cfg=args.cfg, checkpoint=args.checkpoint)
    t_long = time.perf_counter() - t0
    j = long.joints[0]
    acc = np.linalg.norm(j[2:] - 2 * j[1:-1] + j[:-2], axis=-1).mean(-1)        # (T - 2,) per-frame
    joins, start = [], 0
    for _, sec in segs:
        left = round(sec * 20)
        while left > 0:
            new = min(left, 196 - (0 if start == 0 else 20))
            start, left = start + new, left - new
            joins.append(start)
    joins = [f - 1 for f in joins[:-1]]
    inside = np.delete(acc, joins)
    print(f"long sequence: {long.seconds:.0f} s from {len(segs)} prompts in {t_long:.1f} s "
          f"({len(joins) + 1} windows of <= 196 frames); mean joint acceleration at the {len(joins)} joins "
          f"{acc[joins].mean() * 400:.2f} m/s^2 vs {inside.mean() * 400:.2f} m/s^2 elsewhere")

    model = pl.load_model(args.checkpoint)
    gens = lambda: pl.generators(0, 1)
    fast = pl.SamplerOptions(args.sampler, args.steps, args.cfg)
    slow = pl.SamplerOptions("ddpm", 1000, args.cfg)
    prompt = ["a person walks forward then waves"]
    t_fast = timed(lambda: pl.sample_window(model, prompt, 196, gens(), fast))
    t_slow = timed(lambda: pl.sample_window(model, prompt, 196, gens(), slow), repeats=1)
    print(f"\n## speed: 196 frames (9.8 s), batch 1, cfg {args.cfg}, {torch.get_num_threads()} torch thread(s), "
          f"{platform.processor() or platform.machine()} (shared 2-core machine)\n")
    print("| sampler | steps | denoiser calls | seconds | ratio |")
    print("|---|---|---|---|---|")
    print(f"| {args.sampler} (default) | {args.steps} | {args.steps} x 2 (cond + uncond, one batch) | {t_fast:.3f} | 1 |")
    print(f"| ddpm | 1000 | 1000 x 2 | {t_slow:.2f} | {t_slow / t_fast:.0f}x slower |")


if __name__ == "__main__":
    main()
