"""Loader for HumanML3D / KIT-ML style folders (and the procedural corpus, written in the same format).

    ROOT/
      new_joint_vecs/NAME.npy   features, (frames, 263) for HumanML3D (251 for KIT-ML)
      texts/NAME.txt            one caption a line: `caption#tokens#start#end` (start/end in seconds,
                                both 0.0 for the whole clip; otherwise the caption covers that span only)
      train.txt val.txt test.txt   one NAME a line
      Mean.npy Std.npy          normalisation statistics of the training set

Items are `(features, length, caption)`: normalised features (length, D) float32 of one random crop,
its length in frames and one of the clip's captions at random. Cropping follows the T2M recipe: clips
shorter than `min_frames` or at least `max_frames + 4` frames are dropped (as the reference does for
>= 200 at 196), lengths are rounded down to a multiple of `unit_length` (one unit less a third of the
time), and the window start is uniform. `collate` pads a batch and returns a boolean mask.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

log = logging.getLogger("polydiff.motion")

SPLITS = ("train", "val", "test")


class DatasetError(ValueError):
    """A motion data folder that is missing or malformed."""


@dataclass
class Caption:
    text: str
    tokens: list[str]
    start: float  # seconds; 0 and 0 mean the whole clip
    end: float


def parse_caption_line(line: str, where: str = "") -> Caption:
    """One `caption#tokens#start#end` line; raises DatasetError naming `where` (file:line)."""
    parts = line.rstrip("\n").split("#")
    if len(parts) != 4:
        raise DatasetError(
            f"{where}: expected 'caption#tokens#start#end' (4 fields separated by '#'), "
            f"got {len(parts)} field(s): {line.strip()!r}"
        )
    text, tokens, start, end = parts
    if not text.strip():
        raise DatasetError(f"{where}: empty caption in {line.strip()!r}")
    try:
        s, e = float(start or 0.0), float(end or 0.0)
    except ValueError:
        raise DatasetError(
            f"{where}: start/end must be numbers (seconds), got {start!r} and {end!r}"
        ) from None
    # HumanML3D writes nan for "no span" on some lines; its loader reads those as 0 (whole clip)
    s, e = (0.0 if s != s else s), (0.0 if e != e else e)
    if s < 0 or e < 0 or (e > 0 and e <= s):
        raise DatasetError(f"{where}: bad time span start={s} end={e}; use 0.0#0.0 for the whole clip")
    return Caption(text.strip(), tokens.split(), s, e)


def read_captions(path: Path) -> list[Caption]:
    lines = [ln for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]
    return [parse_caption_line(ln, f"{path}:{i + 1}") for i, ln in enumerate(lines)]


def check_folder(root: Path, split: str) -> None:
    """Raise one DatasetError listing what is missing from a HumanML3D-style folder."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"motion data folder {root} does not exist; build one with "
            f"`polydiff motion build-data -o {root}` or point to a HumanML3D / KIT-ML folder"
        )
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {SPLITS}, got {split!r}")
    missing = [
        p
        for p in ("new_joint_vecs", "texts", f"{split}.txt", "Mean.npy", "Std.npy")
        if not (root / p).exists()
    ]
    if missing:
        raise DatasetError(
            f"{root} is not a HumanML3D-style folder: missing {', '.join(missing)} "
            "(expected new_joint_vecs/, texts/, train.txt/val.txt/test.txt, Mean.npy, Std.npy)"
        )


class MotionTextDataset(Dataset):
    """HumanML3D / KIT-ML folder as a torch Dataset of `(features, length, caption)`."""

    def __init__(
        self,
        root,
        split: str = "train",
        max_frames: int = 196,
        min_frames: int = 40,
        unit_length: int = 4,
        fps: float = 20.0,
        normalize: bool = True,
        random_crop: bool = True,
    ):
        self.root = Path(root)
        check_folder(self.root, split)
        self.max_frames, self.min_frames, self.unit_length = max_frames, min_frames, unit_length
        self.random_crop = random_crop
        self.mean = np.load(self.root / "Mean.npy").astype(np.float32)
        self.std = np.load(self.root / "Std.npy").astype(np.float32)
        if self.mean.ndim != 1 or self.mean.shape != self.std.shape:
            raise DatasetError(
                f"Mean.npy {self.mean.shape} and Std.npy {self.std.shape} must be equal 1-D vectors"
            )
        if (self.std <= 0).any():
            raise DatasetError(f"{self.root / 'Std.npy'} has non-positive entries")
        self.dim = int(self.mean.shape[0])
        self.normalize = normalize
        names = [n.strip() for n in (self.root / f"{split}.txt").read_text().splitlines() if n.strip()]
        self.items: list[tuple[np.ndarray, list[str], str]] = []
        skipped = 0
        for name in names:
            vec, txt = self.root / "new_joint_vecs" / f"{name}.npy", self.root / "texts" / f"{name}.txt"
            if not vec.exists() or not txt.exists():
                skipped += 1
                continue
            motion = np.load(vec).astype(np.float32)
            if motion.ndim != 2 or motion.shape[1] != self.dim:
                raise DatasetError(
                    f"{vec}: features of shape {motion.shape}, expected (frames, {self.dim}) "
                    "to match Mean.npy"
                )
            whole = []
            for cap in read_captions(txt):
                if cap.start == 0 and cap.end == 0:
                    whole.append(cap.text)
                    continue
                part = motion[int(cap.start * fps) : int(cap.end * fps)]
                if self._usable(len(part)):
                    self.items.append((part, [cap.text], f"{name}@{cap.start:g}-{cap.end:g}"))
            if whole and self._usable(len(motion)):
                self.items.append((motion, whole, name))
            elif whole:
                skipped += 1
        if skipped:
            log.warning(
                "%s/%s: %d clip(s) missing or out of the %d..%d frame range were skipped",
                self.root,
                split,
                skipped,
                min_frames,
                max_frames + unit_length - 1,
            )
        if not self.items:
            raise DatasetError(
                f"{self.root}/{split}.txt lists {len(names)} clip(s) but none is usable "
                f"(files present, {min_frames}..{max_frames + unit_length - 1} frames)"
            )

    def _usable(self, n: int) -> bool:
        return self.min_frames <= n < self.max_frames + self.unit_length

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        motion, captions, _ = self.items[i]
        caption = captions[random.randrange(len(captions))] if self.random_crop else captions[0]
        n = min(len(motion), self.max_frames)
        if self.random_crop:
            units = n // self.unit_length - (1 if random.random() < 1 / 3 else 0)
            n = max(units, 1) * self.unit_length
            start = random.randint(0, len(motion) - n)
        else:
            start = 0
        x = motion[start : start + n]
        if self.normalize:
            x = (x - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), n, caption


def collate(batch):
    """Pad `(features, length, caption)` items: returns features (B, T_max, D), lengths (B,),
    mask (B, T_max) True on real frames, captions list."""
    feats, lengths, captions = zip(*batch)
    T = max(lengths)
    out = torch.zeros(len(feats), T, feats[0].shape[-1])
    for k, f in enumerate(feats):
        out[k, : len(f)] = f
    lengths_t = torch.tensor(lengths)
    mask = torch.arange(T)[None] < lengths_t[:, None]
    return out, lengths_t, mask, list(captions)
