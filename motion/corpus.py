"""Write the procedural motion corpus as a HumanML3D-style folder (`polydiff motion build-data`).

    OUT/new_joint_vecs/NAME.npy   (frames, 263) float32 features
    OUT/new_joints/NAME.npy       (frames, 22, 3) float32 joints recovered from the features (as HumanML3D)
    OUT/texts/NAME.txt            3 captions, `caption#tokens#0.0#0.0`
    OUT/attributes/NAME.json      exact labels: actions with frame spans and parameters, caption splits
    OUT/train.txt val.txt test.txt, Mean.npy Std.npy (train split), corpus.json (how it was made)

A clip is one to three actions. Clip i is generated from the seed pair (seed, i) alone, so the corpus is
deterministic and clip i does not depend on how many clips are built. Splits are by clip. Training and
validation captions use only `train` paraphrase templates; the first caption of every test clip uses
`heldout` templates (captions.py). The folder is built beside OUT and renamed into place at the end, so
an interrupted build never leaves a half-written corpus.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from . import captions as cap
from .features import features_to_joints, joints_to_features, mean_std
from .procedural import ACTIONS, FPS, perform

MAX_FRAMES = 196  # HumanML3D's longest clip (9.8 s at 20 fps)
MIN_FRAMES = 44  # a little over the T2M loader's 40-frame minimum
CAPTIONS_PER_CLIP = 3
FORMAT_VERSION = 1


class CorpusError(ValueError):
    """Bad arguments to the corpus builder (existing output, bad counts)."""


def sample_program(rng) -> list[str]:
    """One to three action names; `sit_down` is followed only by `stand_up`, which needs a seated start."""
    n = int(rng.choice([1, 2, 3], p=[0.35, 0.4, 0.25]))
    names: list[str] = []
    for k in range(n):
        if names and names[-1] == "sit_down":
            names.append("stand_up")
            continue
        pool = [a for a in ACTIONS if (a != "stand_up" or k == 0) and (not names or a != names[-1])]
        names.append(str(rng.choice(pool)))
    return names


def make_clip(seed: int, index: int, max_frames: int = MAX_FRAMES):
    """(joints (T, 22, 3), labels, program) of clip `index`; retries programs that run too long."""
    rng = np.random.default_rng([seed, index])
    for _ in range(50):
        program = sample_program(rng)
        joints, labels = perform(program, rng)
        if len(joints) < MIN_FRAMES + 1:  # hold the final (still) pose: loaders drop clips under 2 s
            joints = np.concatenate([joints, np.repeat(joints[-1:], MIN_FRAMES + 1 - len(joints), 0)])
        if len(joints) <= max_frames + 1:
            return joints, labels, program
    raise RuntimeError(f"could not fit a program into {max_frames} frames")  # pragma: no cover


def clip_captions(labels, seed: int, index: int, test: bool) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng([seed, index, 1])
    splits = ["heldout" if (test and k == 0) else "train" for k in range(CAPTIONS_PER_CLIP)]
    texts, seen = [], set()
    for s in splits:
        for _ in range(10):  # avoid exact duplicates where the templates allow
            t = cap.caption(labels, rng, s)
            if t not in seen:
                break
        seen.add(t)
        texts.append(t)
    return texts, splits


def split_of(n_clips: int, seed: int, val: float = 0.1, test: float = 0.1) -> list[str]:
    """Split name for each clip index: a seeded permutation, test and val first."""
    order = np.random.default_rng([seed, 2**31 - 1]).permutation(n_clips)
    n_test = max(1, int(round(test * n_clips))) if n_clips >= 3 else 0
    n_val = max(1, int(round(val * n_clips))) if n_clips >= 3 else 0
    split = ["train"] * n_clips
    for k, i in enumerate(order):
        split[i] = "test" if k < n_test else "val" if k < n_test + n_val else "train"
    return split


def build_data(output, clips: int, seed: int = 0, overwrite: bool = False, progress=None) -> Path:
    """Build the corpus into `output` (see module docstring). Returns the folder."""
    out = Path(output)
    if clips < 1:
        raise CorpusError(f"--clips must be at least 1, got {clips}")
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise CorpusError(f"{out} already exists and is not empty; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.building-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    for sub in ("new_joint_vecs", "new_joints", "texts", "attributes"):
        (tmp / sub).mkdir(parents=True)
    splits = split_of(clips, seed)
    names: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    train_feats = []
    indices = range(clips) if progress is None else progress(range(clips), desc="building clips", total=clips)
    try:
        for i in indices:
            name = f"{i:06d}"
            joints, labels, program = make_clip(seed, i)
            feats = joints_to_features(joints, uniform=False)
            frames = len(feats)
            for lb in labels:
                lb["end"] = min(lb["end"], frames)
            texts, cap_splits = clip_captions(labels, seed, i, test=splits[i] == "test")
            np.save(tmp / "new_joint_vecs" / f"{name}.npy", feats)
            np.save(
                tmp / "new_joints" / f"{name}.npy",
                features_to_joints(torch.from_numpy(feats).double()).numpy().astype(np.float32),
            )
            (tmp / "texts" / f"{name}.txt").write_text(
                "".join(f"{t}#{cap.tokens(t)}#0.0#0.0\n" for t in texts), encoding="utf-8"
            )
            meta = dict(
                name=name,
                fps=FPS,
                frames=frames,
                split=splits[i],
                program=program,
                actions=labels,
                captions=texts,
                caption_templates=cap_splits,
            )
            (tmp / "attributes" / f"{name}.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
            names[splits[i]].append(name)
            if splits[i] == "train":
                train_feats.append(feats)
        for s, lst in names.items():
            (tmp / f"{s}.txt").write_text("".join(n + "\n" for n in lst))
        mean, std = mean_std(
            train_feats or [np.load(tmp / "new_joint_vecs" / f"{n}.npy") for n in names["test"]]
        )
        np.save(tmp / "Mean.npy", mean)
        np.save(tmp / "Std.npy", std)
        info = dict(
            format="humanml3d",
            format_version=FORMAT_VERSION,
            generator="polydiff.motion.procedural",
            clips=clips,
            seed=seed,
            fps=FPS,
            max_frames=MAX_FRAMES,
            actions=sorted(ACTIONS),
            splits={s: len(v) for s, v in names.items()},
            heldout_templates={k: [t for t, s in v if s == "heldout"] for k, v in cap._T.items()},
        )
        (tmp / "corpus.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def load_clip(root, name: str):
    """(features (T, 263), joints (T, 22, 3), attributes dict) of one clip of a built corpus."""
    root = Path(root)
    feats = np.load(root / "new_joint_vecs" / f"{name}.npy")
    joints = np.load(root / "new_joints" / f"{name}.npy")
    meta = json.loads((root / "attributes" / f"{name}.json").read_text(encoding="utf-8"))
    return feats, joints, meta
