"""Foot-lock clean-up: pin the toes while they are on the floor, re-solve the legs, keep the root path.

Generated motion often lets a planted foot slide (skating). For each foot we find contact intervals
(toe base within 5 cm of the floor, the skating metric's notion of contact), pin the toe's xz to one
spot per interval (the interval's mean; heights are the frames' own, clamped at the floor), fade the
correction out over a few frames on either side, and move only that leg: the ankle follows the toe with
the foot's own orientation, the knee comes from two-bone IK with the frame's own bone lengths and the
original knee direction as pole. The pelvis and everything above it are untouched, so the root path and
the upper body are exactly the input's.
"""

from __future__ import annotations

import numpy as np

from . import skeleton as sk

_LEGS = {"left": (1, 4, 7, 10), "right": (2, 5, 8, 11)}  # hip, knee, ankle, toe base


def contacts(
    joints, fps: float = 20.0, height: float = 0.05, speed: float = float("inf"), min_frames: int = 2
) -> np.ndarray:
    """Contact mask (T, 2) for the left and right toe bases: below `height` (and slower than `speed` m/s;
    by default any speed, since a toe that low should not slide whatever it is doing: the skating metric's
    own notion of contact), with one-frame gaps filled and contacts shorter than `min_frames` dropped."""
    toes = np.asarray(joints)[:, list(sk.TOES)]
    v = np.zeros(toes.shape[:2])
    v[1:] = np.linalg.norm(toes[1:, :, [0, 2]] - toes[:-1, :, [0, 2]], axis=-1) * fps
    v[0] = v[1] if len(v) > 1 else 0.0
    c = (toes[..., 1] < height) & (v < speed)
    for k in range(2):
        col = c[:, k]
        gaps = ~col[1:-1] & col[:-2] & col[2:]
        col[1:-1] |= gaps
        for a, b in _runs(col):
            if b - a < min_frames:
                col[a:b] = False
    return c


def _runs(mask):
    """[start, end) of each run of True."""
    m = np.concatenate([[False], mask, [False]]).astype(int)
    d = np.diff(m)
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def _two_bone(root, target, l1, l2, pole):
    d_vec = target - root
    d = np.clip(np.linalg.norm(d_vec, axis=-1), np.abs(l1 - l2) + 1e-6, l1 + l2 - 1e-9)
    u = d_vec / np.maximum(np.linalg.norm(d_vec, axis=-1, keepdims=True), 1e-12)
    w = pole - np.sum(pole * u, -1, keepdims=True) * u
    w = w / np.maximum(np.linalg.norm(w, axis=-1, keepdims=True), 1e-12)
    cos_a = np.clip((l1**2 + d**2 - l2**2) / (2 * l1 * d), -1, 1)
    mid = root + l1[:, None] * (cos_a[:, None] * u + np.sqrt(1 - cos_a**2)[:, None] * w)
    return mid, root + d[:, None] * u


def foot_lock(joints, fps: float = 20.0, blend: int = 3, contact=None) -> np.ndarray:
    """Joints (T, 22, 3) with planted toes pinned; see the module docstring. `contact` (T, 2) overrides
    the detected contacts (e.g. the foot-contact channels of the features)."""
    j = np.array(joints, dtype=np.float64)
    T = len(j)
    c = contacts(j, fps) if contact is None else np.asarray(contact, bool)
    for k, (side, (hip, knee, ankle, toe)) in enumerate(_LEGS.items()):
        target = j[:, toe].copy()
        weight = np.zeros(T)
        for a, b in _runs(c[:, k]):
            pin = j[a:b, toe].mean(0)
            target[a:b, [0, 2]] = pin[[0, 2]]  # pinned on the floor plane; heights are the frames' own
            target[a:b, 1] = np.maximum(j[a:b, toe, 1], 0.0)
            weight[a:b] = 1.0
            # outside the interval the correction made at its first / last frame fades out, so a
            # foot that already lands where it is pinned is not touched at all
            for s in range(1, blend + 1):
                w = 1.0 - s / (blend + 1)
                for f, edge in ((a - s, a), (b - 1 + s, b - 1)):
                    if 0 <= f < T and w > weight[f]:
                        target[f, [0, 2]] = j[f, toe, [0, 2]] + w * (pin[[0, 2]] - j[edge, toe, [0, 2]])
                        weight[f] = w
        moved = weight > 0
        if not moved.any():
            continue
        # the foot keeps its orientation: the ankle sits where it was relative to the toe
        ankle_t = target[moved] - (j[moved, toe] - j[moved, ankle])
        l1 = np.linalg.norm(j[moved, knee] - j[moved, hip], axis=-1)
        l2 = np.linalg.norm(j[moved, ankle] - j[moved, knee], axis=-1)
        # pole: where the knee points now; a little of the facing keeps it defined for a straight leg
        across = j[moved, 2] - j[moved, 1]
        facing = np.cross(np.array([0.0, 1.0, 0.0]), across)
        facing /= np.maximum(np.linalg.norm(facing, axis=-1, keepdims=True), 1e-12)
        pole = j[moved, knee] - 0.5 * (j[moved, hip] + j[moved, ankle]) + 0.02 * facing
        new_knee, new_ankle = _two_bone(j[moved, hip], ankle_t, l1, l2, pole)
        shift = new_ankle - j[moved, ankle]
        j[moved, knee], j[moved, ankle] = new_knee, new_ankle
        j[moved, toe] = j[moved, toe] + shift
    return j
