"""Motion data figures: the procedural ground truth against random baselines, and export round trips.

    .venv/bin/python benchmarks/motion_data.py [--clips 200] [--seed 0]

Prints one table (markdown). Rows:
* ground truth: procedural clips (features -> recovered joints, exactly what a model trains on);
* shuffled: each clip's labels checked on another clip's motion (a real motion that does not match);
* noise: features drawn from N(Mean, Std) of the corpus, recovered to joints (random motion).
Columns: attribute accuracy (fraction of action labels the skeleton checkers confirm), foot-skating
ratio (GMD definition), ground penetration and floating (m, lowest joint), jerk (m/s^3).
Then: joints -> features -> joints error, BVH write -> independent read -> FK error, foot-lock effect on
a skating copy of the ground truth, and corpus build speed on this machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from polydiff.motion import bvh, corpus, footlock, metrics
from polydiff.motion.features import canonicalize, features_to_joints, joints_to_features
from polydiff.motion.skeleton import JOINT_NAMES


def row(name, pairs):
    m = metrics.summary(pairs)
    return (
        f"| {name} | {m['attribute_accuracy']:.3f} | {m['skating_ratio']:.4f} | {m['penetration_m']:.4f} | "
        f"{m['floating_m']:.4f} | {m['jerk']:.1f} |"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        root = corpus.build_data(Path(tmp) / "corpus", clips=args.clips, seed=args.seed)
        build_s = time.perf_counter() - t0
        names = sorted(p.stem for p in (root / "attributes").glob("*.json"))
        clips = [corpus.load_clip(root, n) for n in names]
        mean, std = np.load(root / "Mean.npy"), np.load(root / "Std.npy")

    gt = [(m["actions"], j) for _, j, m in clips]
    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(len(gt))
    while np.any(perm == np.arange(len(gt))):
        perm = rng.permutation(len(gt))
    shuffled = [(gt[i][0], gt[p][1]) for i, p in enumerate(perm)]
    noise = []
    for labels, j in gt:
        f = mean + std * rng.standard_normal((len(j), 263)).astype(np.float32)
        noise.append((labels, features_to_joints(torch.from_numpy(f).double()).numpy()))

    print(f"## procedural motion corpus: {len(gt)} clips, seed {args.seed}\n")
    print("| motion | attribute acc. | skating ratio | penetration (m) | floating (m) | jerk (m/s^3) |")
    print("|---|---|---|---|---|---|")
    print(row("ground truth", gt))
    print(row("shuffled (other clip)", shuffled))
    print(row("noise features", noise))

    per_action: dict[str, list[bool]] = {}
    for labels, j in gt:
        for lb in labels:
            per_action.setdefault(lb["action"], []).append(metrics.check(lb, j))
    print(
        "\nground-truth accuracy per action: "
        + ", ".join(f"{a} {np.mean(v):.2f} (n={len(v)})" for a, v in sorted(per_action.items()))
    )

    # round trips on the first 20 clips
    feat_err, bvh_err, ik_err = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k, (_, j) in enumerate(gt[:20]):
            back = features_to_joints(torch.from_numpy(joints_to_features(j, uniform=False)).double()).numpy()
            feat_err.append(np.abs(back - canonicalize(j).numpy()[:-1]).max())
            path, encoded = bvh.export_bvh(Path(tmp) / f"{k}.bvh", j, clean_feet=False)
            read = bvh.read_bvh(path)
            pos = read["positions"][:, [read["names"].index(n) for n in JOINT_NAMES]]
            bvh_err.append(np.linalg.norm(pos - j, axis=-1).mean())
            ik_err.append(np.linalg.norm(encoded - j, axis=-1).mean())
    print(
        f"\njoints -> features -> joints, max abs error: {max(feat_err):.2e} m (20 clips, float32 features)"
    )
    print(
        f"BVH export -> independent reader -> FK, MPJPE: mean {np.mean(bvh_err) * 1000:.4f} mm, "
        f"max {np.max(bvh_err) * 1000:.4f} mm (IK fit alone {np.max(ik_err) * 1000:.2e} mm)"
    )

    # foot lock on a skating copy: lower legs sway 6 cm at 2 Hz
    before, after, gt_sk = [], [], []
    for _, j in gt[:50]:
        t = np.arange(len(j)) / 20.0
        sway = 0.06 * np.stack([np.sin(4 * np.pi * t), 0 * t, np.cos(4 * np.pi * t)], -1)
        s = j.copy()
        s[:, [7, 8, 10, 11]] += sway[:, None]
        s[:, [4, 5]] += 0.5 * sway[:, None]
        before.append(metrics.skating_ratio(s))
        after.append(metrics.skating_ratio(footlock.foot_lock(s)))
        gt_sk.append(metrics.skating_ratio(j))
    print(
        f"foot lock on a skating copy (50 clips): skating {np.mean(before):.3f} -> {np.mean(after):.4f} "
        f"(ground truth {np.mean(gt_sk):.4f})"
    )
    print(
        f"corpus build: {args.clips} clips in {build_s:.1f} s ({args.clips / build_s:.1f} clips/s, "
        f"{torch.get_num_threads()} torch threads)"
    )


if __name__ == "__main__":
    main()
