"""Physical plausibility metrics and attribute checkers on joint positions (T, 22, 3), metres, +Y up.

Foot skating follows the definition of GMD (Karunratanakul et al., 2023), also used by OmniControl: the
toe joints (10, 11); a toe is in contact on a frame pair when its height is below 5 cm on both frames;
it skates when its horizontal speed is above 0.5 m/s on that pair *and* in the 5-frame moving average
(zero-padded); the ratio is the fraction of frame pairs where either toe skates. Heights are absolute,
so call it on canonical joints (floor at y = 0).

Attribute checkers are written on the skeleton, not on any learned model: given one action label of
procedural.py (with its frame span) and joints, each says whether the motion shows it ("walks forward"
moves the root forward relative to the facing at the start of the span ("walks in a curve to the left"
turns that facing left while moving along it), "jumps" lifts the pelvis with
both toes off the floor, "waves the right hand" keeps the right wrist above the right shoulder while it
swings, "turns left" turns the facing counter-clockwise seen from above by about the angle, ...).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter1d

from . import skeleton as sk

J = sk.JOINT_INDEX
FPS = 20.0


# -- physics ----------------------------------------------------------------------------------
def skating_ratio(
    joints, fps: float = FPS, height: float = 0.05, speed: float = 0.5, window: int = 5
) -> float:
    toes = np.asarray(joints)[:, list(sk.TOES)]  # (T, 2, 3)
    if len(toes) < 2:
        return 0.0
    vel = np.linalg.norm(toes[1:, :, [0, 2]] - toes[:-1, :, [0, 2]], axis=-1) * fps  # (T-1, 2)
    avg = uniform_filter1d(vel, size=window, axis=0, mode="constant")
    h = toes[..., 1]
    contact = (h[:-1] < height) & (h[1:] < height)
    skating = contact & (vel > speed) & (avg > speed)
    return float(skating.any(axis=1).mean())


def ground_penetration(joints) -> float:
    """Mean depth (m) of the lowest joint below the floor, 0 where it is above."""
    low = np.asarray(joints)[..., 1].min(axis=-1)
    return float(np.maximum(-low, 0.0).mean())


def floating(joints, tolerance: float = 0.05) -> float:
    """Mean height (m) of the lowest joint above `tolerance` (airborne frames of a jump count too)."""
    low = np.asarray(joints)[..., 1].min(axis=-1)
    return float(np.maximum(low - tolerance, 0.0).mean())


def jerk(joints, fps: float = FPS) -> float:
    """Mean magnitude of the third time derivative of joint positions (m/s^3)."""
    j = np.asarray(joints)
    if len(j) < 4:
        return 0.0
    d3 = np.diff(j, n=3, axis=0) * fps**3
    return float(np.linalg.norm(d3, axis=-1).mean())


# -- body-frame helpers -----------------------------------------------------------------------
def facing_yaw(joints) -> np.ndarray:
    """Facing angle per frame (radians, unwrapped; 0 = +Z, positive = turned left): (T,)."""
    j = np.asarray(joints)
    r_hip, l_hip, r_sdr, l_sdr = sk.FACE_JOINTS
    across = (j[:, r_hip] - j[:, l_hip]) + (j[:, r_sdr] - j[:, l_sdr])
    fwd = np.cross(np.array([0.0, 1.0, 0.0]), across)
    return np.unwrap(np.arctan2(fwd[:, 0], fwd[:, 2]))


def _body_xz(yaw0, v):
    """World xz vectors (..., 2) -> (left, forward) in the frame of facing yaw0."""
    c, s = np.cos(yaw0), np.sin(yaw0)
    return np.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1]], -1)


def _crossings(x) -> int:
    """Number of sign changes of the derivative of x (turning points of an oscillation)."""
    d = np.sign(np.diff(x))
    d = d[d != 0]
    return int((d[1:] != d[:-1]).sum())


# -- checkers ---------------------------------------------------------------------------------
def check(label: dict, joints, fps: float = FPS) -> bool:
    """Does `joints` (the whole clip; the label's start/end select frames) show `label`?"""
    j = np.asarray(joints, dtype=np.float64)
    f0, f1 = int(label.get("start", 0)), min(int(label.get("end", len(j))), len(j))
    seg = j[f0:f1]
    if len(seg) < 4:
        return False
    fn = _CHECKS.get(label["action"])
    if fn is None:
        raise KeyError(f"no checker for action {label['action']!r}")
    return bool(fn(label, seg, fps))


def check_sequence(
    labels: list[dict], joints, slack: float = 0.25, step: int = 2, fps: float = FPS
) -> list[bool]:
    """Checker results for a sequence of labels when the motion's timing may differ from the labels'
    spans (a generated clip of the same length doing the same actions a bit earlier or later): every
    boundary between consecutive actions may move by up to `slack` of the clip length (in `step`-frame
    increments), the placement passing the most labels wins. A single label keeps the whole clip."""
    j = np.asarray(joints, dtype=np.float64)
    T = len(j)
    if len(labels) == 1:
        return [check(dict(labels[0], start=0, end=T), j, fps)]
    bounds = [int(lb["start"]) for lb in labels[1:]]
    reach = int(slack * T)
    options = [range(max(4, b - reach), min(T - 4, b + reach) + 1, step) for b in bounds]
    best: list[bool] = []
    for combo in _increasing(options):
        edges = [0, *combo, T]
        res = [check(dict(lb, start=a, end=b), j, fps) for lb, a, b in zip(labels, edges[:-1], edges[1:])]
        if sum(res) > sum(best) or not best:
            best = res
            if all(res):
                break
    return best


def _increasing(options, lo: int = 0):
    """Tuples picking one value from each range, strictly increasing with gaps of at least 4 frames."""
    if not options:
        yield ()
        return
    for v in options[0]:
        if v >= lo + 4:
            for rest in _increasing(options[1:], v):
                yield (v, *rest)


def _displacement(seg):
    yaw0 = facing_yaw(seg[:3]).mean()
    left, fwd = _body_xz(yaw0, seg[-1, 0, [0, 2]] - seg[0, 0, [0, 2]])
    return left, fwd, np.hypot(left, fwd) / (len(seg) / FPS)


def _turned(seg) -> float:
    """Change of facing over a segment, degrees, + left."""
    yaw = facing_yaw(seg)
    return float(np.rad2deg(yaw[-3:].mean() - yaw[:3].mean()))


def _curved(label, seg, fps):
    """Walking / running along an arc: the facing turns by about `curve` degrees, the pelvis travels
    forward along its own facing, at the gait's speed measured along the path."""
    if abs(_turned(seg) - label["curve"]) > 45:
        return False
    step = np.diff(seg[:, 0, [0, 2]], axis=0)
    yaw = facing_yaw(seg)[:-1]
    along = step[:, 0] * np.sin(yaw) + step[:, 1] * np.cos(yaw)  # displacement along the facing
    path_speed = np.linalg.norm(step, axis=-1).sum() / (len(seg) / fps)
    forward = along.sum() > 0.8 * np.linalg.norm(step, axis=-1).sum()
    if label["action"] == "walk":
        return forward and 0.2 < path_speed < 1.35
    return forward and path_speed >= 2.3


def _locomotion(label, seg, fps):
    if label.get("curve"):
        return _curved(label, seg, fps)
    left, fwd, speed = _displacement(seg)
    a = label["action"]
    mid = seg[len(seg) // 4 : 3 * len(seg) // 4, 0, 1]
    crouched = np.median(mid) < 0.78
    if abs(_turned(seg)) > 40:  # straight locomotion keeps its facing
        return False
    if a == "walk":
        return fwd > 0.5 and abs(left) < 0.5 * fwd and speed < 1.35 and not crouched
    if a == "jog":
        return fwd > 0.5 and abs(left) < 0.5 * fwd and 1.35 <= speed < 2.3
    if a == "run":
        return fwd > 0.5 and abs(left) < 0.5 * fwd and speed >= 2.3
    if a == "walk_backward":
        return fwd < -0.5 and abs(left) < 0.5 * -fwd
    if a == "crouch_walk":
        return fwd > 0.4 and abs(left) < 0.5 * fwd and crouched
    if a == "side_step":
        sign = 1.0 if label["direction"] == "left" else -1.0
        return sign * left > 0.4 and abs(fwd) < 0.5 * abs(left)
    raise KeyError(a)


def _jump(label, seg, fps):
    lift = seg[:, 0, 1].max() - seg[0, 0, 1]
    airborne = (seg[:, list(sk.TOES), 1] > 0.05).all(axis=1).any()
    left, fwd, _ = _displacement(seg)
    moved = fwd > 0.25 if label.get("direction") == "forward" else np.hypot(left, fwd) < 0.2
    return lift > 0.1 and airborne and moved


def _turn(label, seg, fps):
    delta = _turned(seg)
    sign = 1.0 if label["direction"] == "left" else -1.0
    if label["action"] == "spin":
        return sign * delta > 300
    return abs(sign * delta - label["angle"]) < 30


def _raised(seg, side):
    return seg[:, J[f"{side}_wrist"], 1] > seg[:, J[f"{side}_shoulder"], 1] + 0.05


def _wave(label, seg, fps):
    side = label["hand"]
    other = "left" if side == "right" else "right"
    up = _raised(seg, side)
    if up.mean() < 0.25 or _raised(seg, other).mean() > 0.1:
        return False
    yaw0 = facing_yaw(seg[:3]).mean()
    lateral = _body_xz(yaw0, seg[up][:, J[f"{side}_wrist"], [0, 2]] - seg[up][:, 0, [0, 2]])[:, 0]
    return _crossings(lateral) >= 2


def _raise_arms(label, seg, fps):
    head = seg[:, J["head"], 1]
    both = (seg[:, J["left_wrist"], 1] > head) & (seg[:, J["right_wrist"], 1] > head)
    return both.mean() >= 0.2


def _clap(label, seg, fps):
    d = np.linalg.norm(seg[:, J["left_wrist"]] - seg[:, J["right_wrist"]], axis=-1)
    close = d < 0.12
    claps = int((close[1:] & ~close[:-1]).sum() + close[0])
    yaw0 = facing_yaw(seg[:3]).mean()
    mid = 0.5 * (seg[:, J["left_wrist"]] + seg[:, J["right_wrist"]])
    front = _body_xz(yaw0, mid[:, [0, 2]] - seg[:, J["spine3"], [0, 2]])[:, 1]
    return claps >= 2 and (front[close] > 0.15).all()


def _reach_forward(seg, side):
    yaw0 = facing_yaw(seg[:3]).mean()
    rel = seg[:, J[f"{side}_wrist"]] - seg[:, J[f"{side}_shoulder"]]
    fwd = _body_xz(yaw0, rel[:, [0, 2]])[:, 1]
    return ((fwd > 0.4) & (np.abs(rel[:, 1]) < 0.25)).any()


def _punch(label, seg, fps):
    hand = label["hand"]
    sides = ("left", "right") if hand == "both" else (hand,)
    others = () if hand == "both" else (("left",) if hand == "right" else ("right",))
    return all(_reach_forward(seg, s) for s in sides) and not any(_reach_forward(seg, s) for s in others)


def _kick(label, seg, fps):
    s = 10 if label["foot"] == "left" else 11
    o = 11 if s == 10 else 10
    yaw0 = facing_yaw(seg[:3]).mean()
    fwd = _body_xz(yaw0, seg[:, s, [0, 2]] - seg[:, 0, [0, 2]])[:, 1]
    kicked = ((seg[:, s, 1] > 0.3) & (fwd > 0.2)).any()
    return kicked and (seg[:, o, 1] < 0.05).all()


def _squat(label, seg, fps):
    y = seg[:, 0, 1]
    planted = (seg[:, list(sk.TOES), 1] < 0.05).all()
    return y.min() < y[0] - 0.2 and abs(y[-1] - y[0]) < 0.08 and planted


def _spine_tilt(seg):
    v = seg[:, J["neck"]] - seg[:, 0]
    return np.degrees(np.arccos(np.clip(v[:, 1] / np.linalg.norm(v, axis=-1), -1, 1)))


def _bow(label, seg, fps):
    tilt = _spine_tilt(seg)
    return tilt.max() > 20 and tilt[-1] < 12 and seg[:, 0, 1].min() > 0.8


def _sit_down(label, seg, fps):
    return seg[0, 0, 1] > 0.8 and seg[-1, 0, 1] < 0.65


def _stand_up(label, seg, fps):
    return seg[0, 0, 1] < 0.65 and seg[-1, 0, 1] > 0.8


_CHECKS = {
    **{a: _locomotion for a in ("walk", "jog", "run", "walk_backward", "side_step", "crouch_walk")},
    "jump": _jump,
    "turn": _turn,
    "spin": _turn,
    "wave": _wave,
    "raise_arms": _raise_arms,
    "clap": _clap,
    "punch": _punch,
    "kick": _kick,
    "squat": _squat,
    "bow": _bow,
    "sit_down": _sit_down,
    "stand_up": _stand_up,
}


def attribute_accuracy(pairs) -> float:
    """Fraction of action labels, over all (labels, joints) pairs, that their checker confirms."""
    results = [check(lb, j) for labels, j in pairs for lb in labels]
    return float(np.mean(results)) if results else float("nan")


def summary(pairs, fps: float = FPS) -> dict[str, float]:
    """The figures of one row of the motion table for (labels, joints) pairs: attribute accuracy
    (per label), and the clip means of skating ratio, penetration, floating and jerk."""
    joints = [j for _, j in pairs]
    return {
        "attribute_accuracy": attribute_accuracy(pairs),
        "skating_ratio": float(np.mean([skating_ratio(j, fps) for j in joints])),
        "penetration_m": float(np.mean([ground_penetration(j) for j in joints])),
        "floating_m": float(np.mean([floating(j) for j in joints])),
        "jerk": float(np.mean([jerk(j, fps) for j in joints])),
    }
