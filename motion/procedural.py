"""Procedural motions on the 22-joint skeleton: parametric actions, chained into short sequences.

Each action is a function `(state, rng, **params) -> (channels, label, state)` producing the pose
channels of `posing.py` for its frames, an exact attribute label, and the state it leaves the body in.
Every action starts and ends in the same neutral stance (feet side by side under the pelvis, arms
hanging) and eases its own channels in and out, so actions chain with continuous, smooth joints; sitting
down is the one exception (it ends seated and only `stand_up` may follow).

Ground contact is exact by construction: a foot on the floor is a fixed toe-base target (joints 10/11
at y = 0) from landing to lift-off; only swing feet move. Everything that steps goes through the
footstep planner of `stepping.py`.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .posing import REST_POLE, REST_WRIST, STAND_HEIGHT, pose
from .stepping import FPS, State, _body_to_world, _times, envelope, neutral, smoothstep, stance, stepping  # noqa: F401

# -- actions ----------------------------------------------------------------------------------
LOCOMOTION = {  # gait, body-frame direction, speed range (m/s)
    "walk": ("walk", (0.0, 1.0), (0.7, 1.2)),
    "jog": ("jog", (0.0, 1.0), (1.8, 2.4)),
    "run": ("run", (0.0, 1.0), (2.9, 3.6)),
    "walk_backward": ("walk_backward", (0.0, -1.0), (0.5, 0.9)),
    "side_step": ("side_step", None, (0.3, 0.5)),
    "crouch_walk": ("crouch_walk", (0.0, 1.0), (0.4, 0.8)),
}


CURVES = ("walk", "run")  # gaits that may bend their path: `curve` degrees, + left, 360 = a circle


def locomote(state, rng, action, duration=None, speed=None, direction=None, curve=None):
    gait, move, (lo, hi) = LOCOMOTION[action]
    speed = float(rng.uniform(lo, hi)) if speed is None else float(speed)
    duration = float(rng.uniform(2.5, 4.0)) if duration is None else float(duration)
    if curve is None:
        curve = 0.0
        if action in CURVES and rng.random() < 0.3:
            curve = float(rng.choice([-1, 1]) * (360.0 if rng.random() < 0.25 else rng.uniform(60, 180)))
            if abs(curve) >= 360:  # a full circle needs time
                duration = max(duration, 4.5 if action == "walk" else 3.0)
    elif curve and action not in CURVES:
        raise ValueError(f"{action!r} walks straight; curves are for {CURVES}")
    if action == "side_step":
        direction = direction or ("left" if rng.random() < 0.5 else "right")
        move = (1.0, 0.0) if direction == "left" else (-1.0, 0.0)
    else:
        direction = {(0.0, 1.0): "forward", (0.0, -1.0): "backward"}[move]
    ch, end, info = stepping(
        state, gait, move=move, speed=speed, turn=np.deg2rad(curve), duration=duration, rng=rng
    )
    label = dict(
        action=action,
        speed=round(speed, 3),
        direction=direction,
        distance=round(speed * (info["t1"] - info["t0"]), 3),
    )
    if curve:
        label["curve"] = round(float(curve), 1)
    return ch, label, end


def turn(state, rng, angle=None, direction=None, spin=False):
    if spin:
        direction = direction or ("left" if rng.random() < 0.5 else "right")
        angle = 2 * np.pi
        n_steps = 7
    else:
        direction = direction or ("left" if rng.random() < 0.5 else "right")
        angle = np.deg2rad(float(rng.choice([45, 90, 135, 180]))) if angle is None else np.deg2rad(angle)
        n_steps = max(2, int(np.ceil(angle / (np.pi / 4))) + 1)
    signed = angle if direction == "left" else -angle
    ch, end, _ = stepping(state, "spin" if spin else "turn", turn=signed, n_steps=n_steps, rng=rng)
    label = dict(
        action="spin" if spin else "turn", direction=direction, angle=round(float(np.rad2deg(angle)), 1)
    )
    return ch, label, end


def jump(state, rng, forward=None, height=None):
    forward = float(rng.choice([0.0, rng.uniform(0.4, 0.9)])) if forward is None else float(forward)
    height = float(rng.uniform(0.15, 0.3)) if height is None else float(height)
    grav = 9.81
    flight = 2 * np.sqrt(2 * height / grav)
    crouch, t_off = 0.45, 0.75  # crouch bottom, take-off
    t_land = t_off + flight
    t = _times(t_land + 0.9)
    ch = neutral(state, t)
    fwd = _body_to_world(state.yaw, np.array([0.0, 1.0]))
    # crouch, push up 6 cm onto the toes, fly, land on the toes and absorb with the knees
    dip = 0.16 * np.exp(-(((t - crouch) / 0.14) ** 2)) + 0.14 * np.sin(
        np.pi * np.clip((t - t_land) / 0.7, 0, 1)
    )
    y = STAND_HEIGHT - dip + 0.06 * envelope(t, crouch, t_off, t_land, t_land + 0.3)
    air = (t > t_off) & (t < t_land)
    tau = t - t_off
    y_off = STAND_HEIGHT + 0.06 - 0.16 * np.exp(-(((t_off - crouch) / 0.14) ** 2))
    v0 = grav * flight / 2
    y[air] = (y_off + v0 * tau - 0.5 * grav * tau**2)[air]
    move = smoothstep((t - t_off + 0.08) / (flight + 0.16))
    ch["root"][:, [0, 2]] = state.xz + fwd * forward * move[:, None]
    ch["root"][:, 1] = y
    ch["bend"] = 0.35 * np.exp(-(((t - crouch) / 0.18) ** 2)) + 0.3 * np.exp(
        -(((t - t_land - 0.15) / 0.18) ** 2)
    )
    ch["pitch"] = 0.6 * ch["bend"]
    u = np.clip((t - t_off) / flight, 0, 1)
    for s in ("l", "r"):
        start = getattr(state, f"toe_{s}")
        toe = np.tile(start, (len(t), 1))
        toe[:, [0, 2]] += fwd * forward * smoothstep(u)[:, None]
        toe[air, 1] = (y - y_off)[air] + 0.12 * np.sin(np.pi * u[air])
        ch[f"toe_{s}"] = toe
        ch[f"fpitch_{s}"] = 0.5 * envelope(t, t_off - 0.15, t_off, t_off + 0.05, t_off + 0.2)
        swing = np.exp(-(((t - crouch) / 0.2) ** 2)) * -0.25 + np.exp(-(((t - t_off) / 0.2) ** 2)) * 0.35
        ch[f"wrist_{s}"][:, 2] += swing
        ch[f"wrist_{s}"][:, 1] += np.maximum(swing, 0) * 0.8
    end = State(state.xz + fwd * forward, state.yaw, ch["toe_l"][-1].copy(), ch["toe_r"][-1].copy())
    label = dict(
        action="jump",
        forward=round(forward, 3),
        height=round(height, 3),
        direction="forward" if forward > 0 else "in_place",
    )
    return ch, label, end


def _arm_action(state, rng, duration, targets, poles=None, ease=0.5):
    """Helper: arms go from rest to `targets(t, env)` and back. targets returns {side: (T, 3)}."""
    t = _times(duration)
    ch = neutral(state, t)
    env = envelope(t, 0.0, ease, duration - ease, duration)
    for s, target in targets(t, env).items():
        ch[f"wrist_{s}"] = REST_WRIST[s] + env[:, None] * (target - REST_WRIST[s])
        if poles and s in poles:
            ch[f"pole_{s}"] = REST_POLE[s] + env[:, None] * (poles[s] - REST_POLE[s])
    return ch, t, env


def wave(state, rng, hand=None, duration=None, amplitude=None):
    hand = hand or ("left" if rng.random() < 0.5 else "right")
    duration = float(rng.uniform(2.0, 3.5)) if duration is None else float(duration)
    amp = float(rng.uniform(0.08, 0.15)) if amplitude is None else float(amplitude)
    freq = float(rng.uniform(1.5, 2.5))
    s = hand[0]
    x = 0.32 if s == "l" else -0.32

    def targets(t, env):
        osc = amp * np.sin(2 * np.pi * freq * t) * smoothstep((t - 0.5) / 0.3)
        return {s: np.stack([x + np.sign(x) * osc, np.full_like(t, 0.30), np.full_like(t, 0.12)], -1)}

    ch, _, _ = _arm_action(state, rng, duration, targets, poles={s: np.array([np.sign(x) * 1.0, -1.0, 0.0])})
    return ch, dict(action="wave", hand=hand, amplitude=round(amp, 3)), state


def raise_arms(state, rng, duration=None):
    duration = float(rng.uniform(2.0, 3.0)) if duration is None else float(duration)

    def targets(t, env):
        return {"l": np.tile([0.22, 0.58, 0.06], (len(t), 1)), "r": np.tile([-0.22, 0.58, 0.06], (len(t), 1))}

    ch, _, _ = _arm_action(
        state,
        rng,
        duration,
        targets,
        poles={"l": np.array([1.0, 0.0, -0.3]), "r": np.array([-1.0, 0.0, -0.3])},
    )
    return ch, dict(action="raise_arms", hand="both"), state


def clap(state, rng, count=None):
    count = int(rng.integers(2, 6)) if count is None else int(count)
    freq = float(rng.uniform(1.6, 2.4))
    duration = 1.0 + count / freq

    def targets(t, env):
        apart = 0.5 + 0.5 * np.cos(2 * np.pi * freq * (t - 0.5)) * (t > 0.5)
        apart = np.where(t > 0.5 + count / freq, 1.0, np.where(t < 0.5, 1.0, apart))
        gap = 0.028 + 0.18 * apart
        y, z = np.full_like(t, 0.0), np.full_like(t, 0.33)
        return {"l": np.stack([gap, y, z], -1), "r": np.stack([-gap, y, z], -1)}

    ch, _, _ = _arm_action(
        state,
        rng,
        duration,
        targets,
        ease=0.45,
        poles={"l": np.array([1.0, -0.5, 0.0]), "r": np.array([-1.0, -0.5, 0.0])},
    )
    return ch, dict(action="clap", count=count), state


def punch(state, rng, hand=None, count=None):
    hand = hand or str(rng.choice(["left", "right", "both"]))
    count = int(rng.integers(1, 4)) if count is None else int(count)
    if hand == "both":  # alternating fists: at least one punch each
        count = max(count, 2)
    period = 0.5
    duration = 0.9 + count * period

    def targets(t, env):
        out = {}
        for k, s in enumerate(("l", "r")):
            x = 0.14 if s == "l" else -0.14
            ext = np.zeros_like(t)
            for c in range(count):
                if hand == "both" and (c % 2) != k:
                    continue
                if hand != "both" and s != hand[0]:
                    continue
                ext += np.exp(-(((t - 0.6 - (c + 0.5) * period) / 0.09) ** 2))
            out[s] = np.stack([x - np.sign(x) * 0.1 * ext, -0.08 + 0.14 * ext, 0.22 + 0.38 * ext], -1)
        return out

    ch, t, env = _arm_action(
        state,
        rng,
        duration,
        targets,
        ease=0.45,
        poles={"l": np.array([1.0, -1.0, -0.2]), "r": np.array([-1.0, -1.0, -0.2])},
    )
    return ch, dict(action="punch", hand=hand, count=count), state


def kick(state, rng, foot=None, height=None):
    foot = foot or ("left" if rng.random() < 0.5 else "right")
    height = float(rng.uniform(0.4, 0.8)) if height is None else float(height)
    s, o = foot[0], ("r" if foot[0] == "l" else "l")
    t = _times(2.2)
    ch = neutral(state, t)
    fwd = _body_to_world(state.yaw, np.array([0.0, 1.0]))
    lift = envelope(t, 0.55, 1.0, 1.1, 1.6)  # kicking foot in the air
    shift = envelope(t, 0.1, 0.55, 1.6, 2.1)  # weight over the support foot
    support = getattr(state, f"toe_{o}")
    centre = np.array([state.xz[0], state.xz[1]])
    lean = (support[[0, 2]] - centre) * 0.5
    ch["root"][:, [0, 2]] = centre + lean * shift[:, None]
    ch["root"][:, 1] = STAND_HEIGHT - 0.03 * shift
    ch["pitch"] = -0.15 * lift
    start = getattr(state, f"toe_{s}")
    peak = start.copy()
    peak[[0, 2]] += fwd * 0.55
    peak[1] = height
    u = np.clip((t - 0.55) / 1.05, 0, 1)
    up = np.sin(np.pi * u) ** 0.8  # the foot leaves the floor first,
    out = np.sin(np.pi * np.clip((u - 0.12) / 0.76, 0, 1)) ** 2  # then swings out and back
    toe = np.tile(start, (len(t), 1))
    toe[:, [0, 2]] += (peak - start)[[0, 2]] * out[:, None]
    toe[:, 1] = height * up
    ch[f"toe_{s}"] = toe
    ch[f"fpitch_{s}"] = 0.9 * lift
    ch["wrist_l"][:, 0] += 0.1 * shift
    ch["wrist_r"][:, 0] -= 0.1 * shift
    return ch, dict(action="kick", foot=foot, height=round(height, 3)), state


def squat(state, rng, depth=None, count=None):
    depth = float(rng.uniform(0.25, 0.42)) if depth is None else float(depth)
    count = int(rng.integers(1, 3)) if count is None else int(count)
    period = 1.6
    t = _times(0.4 + count * period)
    ch = neutral(state, t)
    down = np.zeros_like(t)
    for c in range(count):
        down = np.maximum(down, np.sin(np.pi * np.clip((t - 0.2 - c * period) / period, 0, 1)) ** 2)
    back = _body_to_world(state.yaw, np.array([0.0, -1.0]))
    ch["root"][:, [0, 2]] += back * 0.12 * depth / 0.4 * down[:, None]
    ch["root"][:, 1] = STAND_HEIGHT - depth * down
    ch["bend"] = 0.25 * down
    ch["pitch"] = 0.35 * down
    for s, x in (("l", 0.18), ("r", -0.18)):
        ch[f"wrist_{s}"] = REST_WRIST[s] + down[:, None] * (np.array([x, 0.0, 0.45]) - REST_WRIST[s])
    return ch, dict(action="squat", depth=round(depth, 3), count=count), state


def bow(state, rng, angle=None):
    angle = float(rng.uniform(40, 75)) if angle is None else float(angle)
    a = np.deg2rad(angle)
    t = _times(2.6)
    ch = neutral(state, t)
    e = envelope(t, 0.2, 1.0, 1.6, 2.4)
    ch["pitch"] = 0.55 * a * e
    ch["bend"] = 0.45 * a * e
    ch["head"] = 0.2 * e
    back = _body_to_world(state.yaw, np.array([0.0, -1.0]))
    ch["root"][:, [0, 2]] += back * 0.08 * (a / 1.2) * e[:, None]
    return ch, dict(action="bow", angle=round(angle, 1)), state


def _sit_channels(state, t, s):
    """s in [0, 1]: 0 standing, 1 seated on a chair of seat height ~0.45 m."""
    ch = neutral(replace(state, seated=False), t)
    back = _body_to_world(state.yaw, np.array([0.0, -1.0]))
    lower = smoothstep(s)
    ch["root"][:, [0, 2]] += back * 0.32 * lower[:, None]
    ch["root"][:, 1] = STAND_HEIGHT + (0.50 - STAND_HEIGHT) * lower
    hump = np.sin(np.pi * np.clip(s, 0, 1))
    ch["pitch"] = 0.55 * hump + 0.05 * lower
    ch["bend"] = 0.2 * hump
    for side, x in (("l", 0.16), ("r", -0.16)):
        ch[f"wrist_{side}"] = REST_WRIST[side] + lower[:, None] * (
            np.array([x, -0.30, 0.30]) - REST_WRIST[side]
        )
    return ch


def sit_down(state, rng, duration=None):
    duration = float(rng.uniform(2.0, 3.0)) if duration is None else float(duration)
    t = _times(duration)
    ch = _sit_channels(state, t, (t - 0.2) / (duration - 0.6))
    back = _body_to_world(state.yaw, np.array([0.0, -1.0]))
    end = replace(state, xz=state.xz + back * 0.32, seated=True)
    return ch, dict(action="sit_down"), end


def stand_up(state, rng, duration=None):
    duration = float(rng.uniform(2.0, 3.0)) if duration is None else float(duration)
    back = _body_to_world(state.yaw, np.array([0.0, -1.0]))
    standing = replace(state, xz=state.xz - back * 0.32, seated=False) if state.seated else state
    t = _times(duration)
    ch = _sit_channels(standing, t, 1 - (t - 0.4) / (duration - 0.6))
    return ch, dict(action="stand_up"), standing


def seated_start(rng) -> State:
    """A clip that starts seated (so `stand_up` can come first)."""
    s = stance((0.0, 0.0), 0.0)
    return replace(s, xz=np.array([0.0, -0.32]), seated=True)


ACTIONS = {
    "walk": lambda s, r, **k: locomote(s, r, "walk", **k),
    "jog": lambda s, r, **k: locomote(s, r, "jog", **k),
    "run": lambda s, r, **k: locomote(s, r, "run", **k),
    "walk_backward": lambda s, r, **k: locomote(s, r, "walk_backward", **k),
    "side_step": lambda s, r, **k: locomote(s, r, "side_step", **k),
    "crouch_walk": lambda s, r, **k: locomote(s, r, "crouch_walk", **k),
    "jump": jump,
    "turn": turn,
    "spin": lambda s, r, **k: turn(s, r, spin=True, **k),
    "wave": wave,
    "raise_arms": raise_arms,
    "clap": clap,
    "punch": punch,
    "kick": kick,
    "squat": squat,
    "bow": bow,
    "sit_down": sit_down,
    "stand_up": stand_up,
}


def perform(actions, rng, state: State | None = None):
    """Chain actions: `actions` is a list of names or (name, params) pairs. Returns
    (joints (T, 22, 3), labels with frame spans). The clip starts standing (or seated when the first
    action is `stand_up`) at the origin facing +Z."""
    steps = [(a, {}) if isinstance(a, str) else a for a in actions]
    if state is None:
        state = seated_start(rng) if steps and steps[0][0] == "stand_up" else stance((0.0, 0.0), 0.0)
    chans, labels, frame = [], [], 0
    for k, (name, params) in enumerate(steps):
        if state.seated and name != "stand_up":
            raise ValueError(f"{name!r} cannot follow sitting down; only 'stand_up' can")
        ch, label, state = ACTIONS[name](state, rng, **params)
        n = len(ch["root"])
        if k > 0:  # the first frame of an action repeats the last of the previous one
            ch = {key: v[1:] for key, v in ch.items()}
            n -= 1
        label.update(start=frame, end=frame + n)
        labels.append(label)
        chans.append(ch)
        frame += n
    merged = {key: np.concatenate([c[key] for c in chans]) for key in chans[0]}
    return pose(merged), labels
