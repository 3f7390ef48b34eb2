"""BVH export of the 22-joint skeleton, and a BVH reader written independently of the writer.

Layout (what Blender's importer and most tools expect):

    HIERARCHY
    ROOT pelvis            OFFSET 0 0 0,
                           CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
      JOINT left_hip ...   OFFSET = rest offset from the parent, CHANNELS 3 Zrotation Xrotation Yrotation
        ... End Site       leaf joints (toes, head, wrists) end in a short End Site along their bone
    MOTION
    Frames: T
    Frame Time: 1 / fps
    one line per frame: root position, then the Euler angles of every joint in HIERARCHY order (degrees)

Channels are intrinsic rotations applied in the order listed: R = Rz(z) Rx(x) Ry(y) (column vectors,
local -> parent), which is how Blender composes them. The skeleton is +Y up, facing +Z (Blender's
default BVH import axes, "Y up / -Z forward", turn it upright). Units: metres by default, so Blender's
importer needs its default Scale 1.0; `units="cm"` writes centimetres (what MotionBuilder / CMU files
use; import those in Blender with Scale 0.01).

Export runs IK (kinematics.py) on joint positions; by default the foot-lock clean-up (footlock.py) runs
first. Files are written to a temporary file beside the target and renamed into place.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from polydiff.core.runtime import atomic_write

from . import skeleton as sk
from .footlock import foot_lock
from .kinematics import fit_offsets, forward_kinematics, inverse_kinematics
from .rotations import matrix_to_euler

UNITS = {"m": 1.0, "cm": 100.0}


class BVHError(ValueError):
    """A BVH file that cannot be read, or bad export arguments."""


def _atomic_write(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="ascii"))


def write_bvh(
    path, local_rot, root_pos, offsets=None, fps: float = 20.0, units: str = "m", order: str = "ZXY"
) -> Path:
    """Write local rotations (T, 22, 3, 3) and root positions (T, 3) (metres) as BVH."""
    path = Path(path)
    if units not in UNITS:
        raise BVHError(f"units must be one of {sorted(UNITS)}, got {units!r}")
    if fps <= 0:
        raise BVHError(f"fps must be positive, got {fps}")
    scale = UNITS[units]
    local_rot = torch.as_tensor(np.asarray(local_rot), dtype=torch.float64)
    root_pos = np.asarray(root_pos, dtype=np.float64) * scale
    offsets = (sk.OFFSETS if offsets is None else np.asarray(offsets, dtype=np.float64)) * scale
    T = local_rot.shape[0]
    euler = matrix_to_euler(local_rot, order).numpy()  # (T, 22, 3) radians
    euler[..., 0] = np.unwrap(euler[..., 0], axis=0)  # continuous curves for
    euler[..., 2] = np.unwrap(euler[..., 2], axis=0)  # interpolating tools
    euler = np.degrees(euler)
    axes = " ".join(f"{a}rotation" for a in order)
    lines = ["HIERARCHY"]

    def emit(j, depth):
        pad = "  " * depth
        kind = "ROOT" if j == 0 else "JOINT"
        lines.append(f"{pad}{kind} {sk.JOINT_NAMES[j]}")
        lines.append(f"{pad}{{")
        o = offsets[j] if j else np.zeros(3)
        lines.append(f"{pad}  OFFSET {o[0]:.6f} {o[1]:.6f} {o[2]:.6f}")
        if j == 0:
            lines.append(f"{pad}  CHANNELS 6 Xposition Yposition Zposition {axes}")
        else:
            lines.append(f"{pad}  CHANNELS 3 {axes}")
        for c in sk.CHILDREN[j]:
            emit(c, depth + 1)
        if not sk.CHILDREN[j]:  # End Site: a short stub along the bone, for display
            stub = offsets[j] / max(np.linalg.norm(offsets[j]), 1e-9) * 0.05 * scale
            lines.append(f"{pad}  End Site")
            lines.append(f"{pad}  {{")
            lines.append(f"{pad}    OFFSET {stub[0]:.6f} {stub[1]:.6f} {stub[2]:.6f}")
            lines.append(f"{pad}  }}")
        lines.append(f"{pad}}}")

    emit(0, 0)
    order_dfs = _dfs_order()
    lines += ["MOTION", f"Frames: {T}", f"Frame Time: {1.0 / fps:.10f}"]
    for t in range(T):
        vals = [f"{v:.6f}" for v in root_pos[t]]
        vals += [f"{v:.6f}" for j in order_dfs for v in euler[t, j]]
        lines.append(" ".join(vals))
    _atomic_write(path, "\n".join(lines) + "\n")
    return path


def _dfs_order() -> list[int]:
    out: list[int] = []

    def visit(j):
        out.append(j)
        for c in sk.CHILDREN[j]:
            visit(c)

    visit(0)
    return out


def export_bvh(
    path,
    joints,
    fps: float = 20.0,
    units: str = "m",
    clean_feet: bool = True,
    offsets=None,
    refine_steps: int = 30,
) -> tuple[Path, np.ndarray]:
    """Joint positions (T, 22, 3) in metres -> BVH file. Returns (path, the joints the file encodes):
    foot-locked (unless `clean_feet=False`), fitted by IK onto the skeleton with `offsets` (default: this
    skeleton's rest directions with the motion's mean bone lengths)."""
    j = np.asarray(joints, dtype=np.float64)
    if j.ndim != 3 or j.shape[1:] != (sk.NUM_JOINTS, 3):
        raise BVHError(f"joints must have shape (frames, 22, 3), got {j.shape}")
    if len(j) < 1 or not np.isfinite(j).all():
        raise BVHError("joints must be a non-empty array of finite numbers")
    if clean_feet:
        j = foot_lock(j, fps=fps)
    offsets = fit_offsets(j) if offsets is None else np.asarray(offsets, dtype=np.float64)
    local, root = inverse_kinematics(j, offsets=offsets, refine_steps=refine_steps)
    encoded = forward_kinematics(local, root, offsets).numpy()
    return write_bvh(path, local, root.numpy(), offsets, fps=fps, units=units), encoded


# -- reader (independent of the writer: its own parser, Euler composition and FK) ---------------
def _axis_matrix(axis: str, degrees: np.ndarray) -> np.ndarray:
    a = np.radians(degrees)
    c, s = np.cos(a), np.sin(a)
    m = np.zeros(a.shape + (3, 3))
    i = "XYZ".index(axis)
    j, k = (i + 1) % 3, (i + 2) % 3
    m[..., i, i] = 1.0
    m[..., j, j] = c
    m[..., k, k] = c
    m[..., j, k] = -s
    m[..., k, j] = s
    return m


def read_bvh(path) -> dict:
    """Parse a BVH file. Returns names, parents, offsets (J, 3), channels per joint, frame_time and
    `positions` (T, J, 3): world joint positions in the file's units from FK of the motion data."""
    try:
        tok = Path(path).read_text(encoding="ascii", errors="strict").split()
    except (OSError, UnicodeDecodeError) as err:
        raise BVHError(f"cannot read BVH file {path}: {err}") from None
    try:
        return _parse(path, tok)
    except ValueError as err:
        if isinstance(err, BVHError):
            raise
        raise BVHError(f"{path}: malformed number in BVH file ({err})") from None


def _parse(path, tok: list[str]) -> dict:
    pos = 0

    def take(expected=None):
        nonlocal pos
        if pos >= len(tok):
            raise BVHError(
                f"{path}: unexpected end of file" + (f", expected {expected!r}" if expected else "")
            )
        t = tok[pos]
        pos += 1
        if expected is not None and t != expected:
            raise BVHError(f"{path}: expected {expected!r}, found {t!r} (token {pos})")
        return t

    names, parents, offsets, channels = [], [], [], []
    take("HIERARCHY")
    stack: list[int] = []
    while True:
        t = take()
        if t in ("ROOT", "JOINT"):
            names.append(take())
            parents.append(stack[-1] if stack else -1)
            take("{")
            take("OFFSET")
            offsets.append([float(take()) for _ in range(3)])
            take("CHANNELS")
            channels.append([take() for _ in range(int(take()))])
            stack.append(len(names) - 1)
        elif t == "End":
            take("Site")
            take("{")
            take("OFFSET")
            [float(take()) for _ in range(3)]
            take("}")
        elif t == "}":
            stack.pop()
        elif t == "MOTION":
            break
        else:
            raise BVHError(f"{path}: unexpected token {t!r} in HIERARCHY")
        if not stack and t == "}":
            take("MOTION")
            break
    take("Frames:")
    n_frames = int(take())
    take("Frame")
    take("Time:")
    frame_time = float(take())
    n_ch = sum(len(c) for c in channels)
    values = np.array(tok[pos:], dtype=np.float64)
    if values.size != n_frames * n_ch:
        raise BVHError(f"{path}: {values.size} motion values, expected {n_frames} frames x {n_ch} channels")
    data = values.reshape(n_frames, n_ch)

    J = len(names)
    world_r = [None] * J
    world_p = np.zeros((n_frames, J, 3))
    col = 0
    for j in range(J):
        rot = np.broadcast_to(np.eye(3), (n_frames, 3, 3)).copy()
        trans = np.broadcast_to(np.asarray(offsets[j]), (n_frames, 3)).copy()
        for ch in channels[j]:
            v = data[:, col]
            col += 1
            axis, kind = ch[0].upper(), ch[1:].lower()
            if kind == "rotation":
                rot = rot @ _axis_matrix(axis, v)
            elif kind == "position":
                trans[:, "XYZ".index(axis)] += v
            else:
                raise BVHError(f"{path}: unknown channel {ch!r}")
        p = parents[j]
        if p < 0:
            world_r[j], world_p[:, j] = rot, trans
        else:
            world_r[j] = world_r[p] @ rot
            world_p[:, j] = world_p[:, p] + np.einsum("tij,tj->ti", world_r[p], trans)
    return dict(
        names=names,
        parents=parents,
        offsets=np.asarray(offsets),
        channels=channels,
        frame_time=frame_time,
        fps=1.0 / frame_time if frame_time > 0 else math.inf,
        positions=world_p,
    )
