"""Pose the skeleton from a few intuitive channels: pelvis, spine, toe targets, wrist targets.

The procedural corpus is authored in these channels, one value per frame:

    root (T, 3)      pelvis position, world, metres
    yaw (T,)         facing: rotation about +Y, 0 faces +Z, positive turns left
    pitch (T,)       pelvis lean forward (radians)
    bend, twist, side (T,)  spine flexion forward, axial twist (left positive), side bend, spread evenly
                     over spine1..spine3
    head (T,)        head nod forward
    toe_l / toe_r (T, 3)   world position of the toe base (joints 10 / 11): what touches the floor
    fyaw_l / fyaw_r (T,)   foot yaw; fpitch_l / fpitch_r (T,) requested heel raise (radians)
    wrist_l / wrist_r (T, 3)  wrist targets in the chest frame (spine3's position and rotation)
    pole_l / pole_r (T, 3)    where the elbow should point, chest frame

Legs and arms are solved with two-bone IK, so every bone keeps its rest length exactly: the joints are
a rigid motion of `skeleton.OFFSETS` and IK/BVH export reproduce them. A toe target the leg cannot
reach with the requested foot pitch pitches the foot about the toe base (heel up, or toes up as in a heel
strike) by the least amount that makes it reachable; only if no pitch within 0.7 rad of the request
does, the ankle stops short and the toe misses its target (this happens to some swing feet of the jog
and run, in the air; planted feet always reach).
"""

from __future__ import annotations

import numpy as np

from . import skeleton as sk

J = sk.JOINT_INDEX
_O = sk.OFFSETS
_THIGH, _SHIN = sk.BONE_LENGTHS[J["left_knee"]], sk.BONE_LENGTHS[J["left_ankle"]]
_UPPER, _FORE = sk.BONE_LENGTHS[J["left_elbow"]], sk.BONE_LENGTHS[J["left_wrist"]]
_LEG_REACH = 0.998 * (_THIGH + _SHIN)
_PITCH_GRID = np.linspace(-0.5, 1.3, 901)  # foot pitch: toes up (heel strike) to heel high
_MAX_PITCH_CHANGE = 0.7

# Wrist and elbow-pole targets of relaxed arms hanging by the sides, chest frame.
REST_WRIST = {"l": np.array([0.19, -0.34, 0.04]), "r": np.array([-0.19, -0.34, 0.04])}
REST_POLE = {"l": np.array([0.3, 0.0, -1.0]), "r": np.array([-0.3, 0.0, -1.0])}
STAND_HEIGHT = sk.STANDING_PELVIS_HEIGHT - 0.012  # knees a touch soft, so standing is reachable
STANCE_HALF_WIDTH = 0.09  # toe bases this far either side of the pelvis
TOE_FORWARD = float(_O[J["left_foot"], 2])  # toe base ahead of the ankle: ankle under the hip


def rx(a):
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([o, z, z, z, c, -s, z, s, c], -1).reshape(np.shape(a) + (3, 3))


def ry(a):
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([c, z, s, z, o, z, -s, z, c], -1).reshape(np.shape(a) + (3, 3))


def rz(a):
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([c, -s, z, s, c, z, z, z, o], -1).reshape(np.shape(a) + (3, 3))


def _apply(r, v):
    return np.einsum("...ij,...j->...i", r, v)


def _unit(v):
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def two_bone_ik(root, target, l1, l2, pole):
    """Middle and end joints of a two-bone limb from `root` towards `target` (T, 3), bending towards
    `pole` (T, 3). The end stops short when the target is out of reach."""
    d_vec = target - root
    d = np.clip(np.linalg.norm(d_vec, axis=-1), abs(l1 - l2) + 1e-6, l1 + l2 - 1e-9)
    u = _unit(d_vec)
    w = pole - np.sum(pole * u, -1, keepdims=True) * u
    # pole parallel to the limb: any perpendicular will do, prefer one from world up
    fallback = np.cross(u, np.cross(np.array([0.0, 1.0, 0.0]), u))
    w = np.where(np.linalg.norm(w, axis=-1, keepdims=True) > 1e-6, w, fallback + 1e-9)
    w = _unit(w)
    cos_a = np.clip((l1**2 + d**2 - l2**2) / (2 * l1 * d), -1.0, 1.0)
    sin_a = np.sqrt(1 - cos_a**2)
    mid = root + l1 * (cos_a[:, None] * u + sin_a[:, None] * w)
    end = root + d[:, None] * u
    return mid, end


def _ankle_from_toe(toe, fyaw, fpitch, side):
    foot = _O[J[f"{side}_foot"]]
    return toe - _apply(ry(fyaw) @ rx(fpitch), np.broadcast_to(foot, toe.shape))


def _solve_heel(hip, toe, fyaw, fpitch, side):
    """The foot pitch nearest the requested one that puts the ankle within reach of the hip."""
    pitch = np.array(fpitch, dtype=np.float64)
    ankle = _ankle_from_toe(toe, fyaw, pitch, side)
    short = np.linalg.norm(ankle - hip, axis=-1) > _LEG_REACH
    if short.any():  # search only where the requested pitch does not reach
        pitch[short] = _search_pitch(hip[short], toe[short], fyaw[short], pitch[short], side)
    return pitch


def _search_pitch(hip, toe, fyaw, fpitch, side):
    grid = _PITCH_GRID[None, :]
    foot = _O[J[f"{side}_foot"]]
    c, s = np.cos(grid), np.sin(grid)
    # foot vector after pitch (x = 0 for our feet), then yaw
    fy = foot[1] * c - foot[2] * s
    fz = foot[1] * s + foot[2] * c
    cy, sy = np.cos(fyaw)[:, None], np.sin(fyaw)[:, None]
    ax = toe[:, 0:1] - (cy * foot[0] + sy * fz)
    ay = toe[:, 1:2] - fy
    az = toe[:, 2:3] - (-sy * foot[0] + cy * fz)
    dist = np.sqrt((ax - hip[:, 0:1]) ** 2 + (ay - hip[:, 1:2]) ** 2 + (az - hip[:, 2:3]) ** 2)
    # the feasible pitch closest to the requested one; if none is near, the one reaching furthest among
    # the near ones (the toe then misses its target a little rather than the foot flipping over)
    change = np.abs(grid - fpitch[:, None])
    near = change <= _MAX_PITCH_CHANGE
    cost = np.where((dist <= _LEG_REACH) & near, change, np.inf)
    best = np.where(np.isfinite(cost).any(1), cost.argmin(1), np.where(near, dist, np.inf).argmin(1))
    return _PITCH_GRID[best]


def pose(ch: dict) -> np.ndarray:
    """Joint positions (T, 22, 3) from the channels above (see module docstring)."""
    root = np.asarray(ch["root"], dtype=np.float64)
    T = len(root)
    zero = np.zeros(T)
    get = lambda k: np.asarray(ch.get(k, zero), dtype=np.float64)  # noqa: E731
    yaw, pitch = get("yaw"), get("pitch")
    bend, twist, side, head = get("bend"), get("twist"), get("side"), get("head")
    out = np.zeros((T, sk.NUM_JOINTS, 3))
    g_pelvis = ry(yaw) @ rx(pitch)
    out[:, 0] = root
    for j in (J["left_hip"], J["right_hip"], J["spine1"]):
        out[:, j] = root + _apply(g_pelvis, _O[j])
    # spine: the same local rotation at spine1, spine2, spine3
    local = ry(twist / 3) @ rx(bend / 3) @ rz(-side / 3)
    g = g_pelvis @ local
    out[:, J["spine2"]] = out[:, J["spine1"]] + _apply(g, _O[J["spine2"]])
    g = g @ local
    out[:, J["spine3"]] = out[:, J["spine2"]] + _apply(g, _O[J["spine3"]])
    chest = g @ local
    c3 = out[:, J["spine3"]]
    out[:, J["neck"]] = c3 + _apply(chest, _O[J["neck"]])
    out[:, J["head"]] = out[:, J["neck"]] + _apply(chest @ rx(head), _O[J["head"]])
    for s, name in (("l", "left"), ("r", "right")):
        collar, shoulder = J[f"{name}_collar"], J[f"{name}_shoulder"]
        out[:, collar] = c3 + _apply(chest, _O[collar])
        out[:, shoulder] = out[:, collar] + _apply(chest, _O[shoulder])
        wrist = c3 + _apply(chest, np.broadcast_to(ch.get(f"wrist_{s}", REST_WRIST[s]), (T, 3)))
        pole = _apply(chest, np.broadcast_to(ch.get(f"pole_{s}", REST_POLE[s]), (T, 3)))
        out[:, J[f"{name}_elbow"]], out[:, J[f"{name}_wrist"]] = two_bone_ik(
            out[:, shoulder], wrist, _UPPER, _FORE, pole
        )
        # legs: toe target -> heel raise -> ankle -> knee
        hip = out[:, J[f"{name}_hip"]]
        toe = np.asarray(ch[f"toe_{s}"], dtype=np.float64)
        fyaw = get(f"fyaw_{s}") if f"fyaw_{s}" in ch else yaw
        fpitch = _solve_heel(hip, toe, fyaw, get(f"fpitch_{s}"), name)
        ankle = _ankle_from_toe(toe, fyaw, fpitch, name)
        knee_pole = _apply(ry(0.5 * (yaw + fyaw)), np.array([0.0, 0.0, 1.0]))
        knee, ankle = two_bone_ik(hip, ankle, _THIGH, _SHIN, knee_pole)
        out[:, J[f"{name}_knee"]], out[:, J[f"{name}_ankle"]] = knee, ankle
        out[:, J[f"{name}_foot"]] = ankle + _apply(
            ry(fyaw) @ rx(fpitch), np.broadcast_to(_O[J[f"{name}_foot"]], (T, 3))
        )
    return out
