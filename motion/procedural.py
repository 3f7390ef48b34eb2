"""Procedural motions on the 22-joint skeleton: parametric actions, chained into short sequences.

Each action is a function `(state, rng, **params) -> (channels, label, state)` producing the pose
channels of `posing.py` for its frames, an exact attribute label, and the state it leaves the body in.
Every action starts and ends in the same neutral stance (feet side by side under the pelvis, arms
hanging) and eases its own channels in and out, so actions chain with continuous, smooth joints; sitting
down is the one exception (it ends seated and only `stand_up` may follow).

Ground contact is exact by construction: a foot on the floor is a fixed toe-base target (joints 10/11
at y = 0) from landing to lift-off; only swing feet move. Stepping (walk, jog, run, walking backwards,
side steps, crouch-walk, turns, spins) is one footstep planner: feet alternate, each lands where the
pelvis will be half-way through that foot's stance.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .posing import REST_POLE, REST_WRIST, STANCE_HALF_WIDTH, STAND_HEIGHT, TOE_FORWARD, pose

FPS = 20.0
SETTLE = 0.25  # seconds of stillness-seeking at the end of stepping actions


@dataclass(frozen=True)
class State:
    xz: np.ndarray            # pelvis position on the floor (2,)
    yaw: float                # facing
    toe_l: np.ndarray         # planted toe bases (3,)
    toe_r: np.ndarray
    seated: bool = False


def stance(xz, yaw, width=STANCE_HALF_WIDTH) -> State:
    return State(np.asarray(xz, float), float(yaw), _foot_at(xz, yaw, +1, width), _foot_at(xz, yaw, -1, width))


def _foot_at(xz, yaw, sign, width=STANCE_HALF_WIDTH):
    c, s = np.cos(yaw), np.sin(yaw)
    lx, lz = sign * width, TOE_FORWARD
    return np.array([xz[0] + c * lx + s * lz, 0.0, xz[1] - s * lx + c * lz])


def _body_to_world(yaw, v):
    """Rotate body-frame xz vectors (x left, z forward) by yaw: (..., 2)."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.stack([c * v[..., 0] + s * v[..., 1], -s * v[..., 0] + c * v[..., 1]], -1)


def smoothstep(u):
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3 - 2 * u)


def envelope(t, t_in0, t_in1, t_out0, t_out1):
    """0 -> 1 over [t_in0, t_in1], 1 until t_out0, -> 0 by t_out1 (smoothstep edges)."""
    up = smoothstep((t - t_in0) / max(t_in1 - t_in0, 1e-6))
    down = 1 - smoothstep((t - t_out0) / max(t_out1 - t_out0, 1e-6))
    return up * down


def ease_progress(u, ramp=0.25):
    """Fraction of a move done at normalised time u: trapezoid speed with smooth ramps, average 1."""
    grid = np.linspace(0, 1, 2001)
    speed = smoothstep(grid / ramp) * smoothstep((1 - grid) / ramp)
    pos = np.concatenate([[0], np.cumsum(0.5 * (speed[1:] + speed[:-1]))])
    return np.interp(np.clip(u, 0, 1), grid, pos / pos[-1])


def _times(duration):
    n = int(round(duration * FPS)) + 1
    return np.arange(n) / FPS


def neutral(state: State, t) -> dict:
    """Channels of standing still in `state` for times t."""
    n = len(t)
    h = 0.50 if state.seated else STAND_HEIGHT
    return {
        "root": np.tile([state.xz[0], h, state.xz[1]], (n, 1)), "yaw": np.full(n, state.yaw),
        "pitch": np.zeros(n), "bend": np.zeros(n), "twist": np.zeros(n), "side": np.zeros(n), "head": np.zeros(n),
        "toe_l": np.tile(state.toe_l, (n, 1)), "toe_r": np.tile(state.toe_r, (n, 1)),
        "fyaw_l": np.full(n, state.yaw), "fyaw_r": np.full(n, state.yaw),
        "fpitch_l": np.zeros(n), "fpitch_r": np.zeros(n),
        "wrist_l": np.tile(REST_WRIST["l"], (n, 1)), "wrist_r": np.tile(REST_WRIST["r"], (n, 1)),
        "pole_l": np.tile(REST_POLE["l"], (n, 1)), "pole_r": np.tile(REST_POLE["r"], (n, 1)),
    }


# -- stepping ----------------------------------------------------------------------------------
GAITS = {  # step period, swing time (toe base off the floor), pelvis height, bob, step height, lean, arm swing
    "walk": dict(Ts=0.50, Tsw=0.55, height=0.87, bob=0.015, lift=0.10, bend=0.05, arm=0.12),
    "jog": dict(Ts=0.36, Tsw=0.50, height=0.84, bob=0.04, lift=0.16, bend=0.12, arm=0.16),
    "run": dict(Ts=0.30, Tsw=0.45, height=0.82, bob=0.05, lift=0.22, bend=0.22, arm=0.22),
    "walk_backward": dict(Ts=0.55, Tsw=0.55, height=0.87, bob=0.01, lift=0.08, bend=-0.03, arm=0.06),
    "side_step": dict(Ts=0.50, Tsw=0.40, height=0.88, bob=0.01, lift=0.08, bend=0.0, arm=0.0, width=0.16),
    "crouch_walk": dict(Ts=0.60, Tsw=0.50, height=0.70, bob=0.01, lift=0.10, bend=0.35, arm=0.05),
    "turn": dict(Ts=0.45, Tsw=0.40, height=0.89, bob=0.0, lift=0.09, bend=0.0, arm=0.03),
    "spin": dict(Ts=0.32, Tsw=0.30, height=0.88, bob=0.0, lift=0.09, bend=0.0, arm=0.08),
}


def stepping(state: State, gait: str, move=(0.0, 0.0), speed=0.0, turn=0.0, duration=None,
             n_steps=None, first=None, rng=None):
    """Footstep locomotion. move: unit direction in the body frame (x left, z forward); speed: mean
    speed while moving (m/s); turn: total yaw change (radians, + left)."""
    g = GAITS[gait]
    Ts, Tsw, width = g["Ts"], g["Tsw"], g.get("width", STANCE_HALF_WIDTH)
    t0 = 0.2
    if n_steps is None:
        n_steps = max(2, int(round((duration - t0 - SETTLE - Tsw) / Ts)) + 1)
    t1 = t0 + (n_steps - 1) * Ts + Tsw
    t = _times(t1 + SETTLE)
    prog = ease_progress((t - t0) / (t1 - t0))
    dist = speed * (t1 - t0)
    xz = state.xz + _body_to_world(state.yaw, np.asarray(move, float))[None] * dist * prog[:, None]
    yaw = state.yaw + turn * prog
    ch = neutral(state, t)
    ch["root"][:, [0, 2]] = xz
    ch["yaw"] = yaw
    env = envelope(t, 0.0, t0 + 0.2, t1 - 0.15, t1 + SETTLE)
    phase = np.pi * (t - t0) / Ts
    # pelvis bob: walking vaults over the stance leg (highest at mid-stance), running sinks into it
    stance_phase = np.pi * (t - t0 - Tsw / 2) / Ts
    bob = np.sin(stance_phase) ** 2 if gait in ("jog", "run") else np.cos(stance_phase) ** 2
    ch["root"][:, 1] = STAND_HEIGHT + (g["height"] - STAND_HEIGHT) * env + g["bob"] * env * bob
    ch["bend"] = g["bend"] * env * (1 if gait != "crouch_walk" else 0.6)
    ch["pitch"] = (0.25 * env) if gait == "crouch_walk" else np.zeros_like(t)

    if first is None:
        if abs(turn) > 1e-6:
            first = "l" if turn > 0 else "r"
        elif abs(move[0]) > 0.5:
            first = "l" if move[0] > 0 else "r"
        else:
            first = "l" if (rng is None or rng.random() < 0.5) else "r"
    sides = [first, "r" if first == "l" else "l"]
    at = lambda tt, arr: np.interp(tt, t, arr)  # noqa: E731
    plants = {"l": (state.toe_l.copy(), state.yaw), "r": (state.toe_r.copy(), state.yaw)}
    for k in range(n_steps):
        s = sides[k % 2]
        sign = 1 if s == "l" else -1
        a, b = t0 + k * Ts, t0 + k * Ts + Tsw
        if k >= n_steps - 2:  # last step of this foot: close the stance at the final pose
            new_yaw = yaw[-1]
            new = _foot_at(xz[-1], new_yaw, sign, STANCE_HALF_WIDTH)
        else:
            m = b + 0.5 * (t0 + (k + 2) * Ts - b)
            new_yaw = at(m, yaw)
            new = _foot_at(np.array([at(m, xz[:, 0]), at(m, xz[:, 1])]), new_yaw, sign, width)
        old, old_yaw = plants[s]
        u = np.clip((t - a) / Tsw, 0, 1)
        # the toe rises before it travels and travels before it comes down: no sliding near the floor
        w = smoothstep((u - 0.15) / 0.7)[:, None]
        swing = (t >= a) & (t <= b)
        after = t > b
        toe = ch[f"toe_{s}"]
        toe[swing] = (old + (new - old) * w)[swing]
        toe[swing, 1] = g["lift"] * np.sin(np.pi * u[swing]) ** 0.6
        toe[after] = new
        fy = ch[f"fyaw_{s}"]
        fy[swing | after] = (old_yaw + (new_yaw - old_yaw) * w[:, 0])[swing | after]
        ch[f"fpitch_{s}"][swing] = 0.3 * np.sin(np.pi * u[swing])
        plants[s] = (new, new_yaw)
    # arms swing against the legs: the first foot's arm starts forward
    arm = g["arm"] * env * np.cos(phase)
    for s, sgn in ((first, 1.0), (sides[1], -1.0)):
        ch[f"wrist_{s}"][:, 2] += sgn * arm
        ch[f"wrist_{s}"][:, 1] += 0.3 * np.abs(sgn * arm) * (sgn * np.cos(phase) > 0)
    if gait in ("jog", "run"):  # elbows bent
        for s, x in (("l", 0.2), ("r", -0.2)):
            ch[f"wrist_{s}"] = ch[f"wrist_{s}"] + env[:, None] * (np.array([x, -0.14, 0.16]) - REST_WRIST[s])
    end = State(xz[-1].copy(), float(yaw[-1]), plants["l"][0], plants["r"][0])
    return ch, end, dict(t0=t0, t1=t1)


# -- actions ----------------------------------------------------------------------------------
LOCOMOTION = {  # gait, body-frame direction, speed range (m/s)
    "walk": ("walk", (0.0, 1.0), (0.7, 1.2)),
    "jog": ("jog", (0.0, 1.0), (1.8, 2.4)),
    "run": ("run", (0.0, 1.0), (2.9, 3.6)),
    "walk_backward": ("walk_backward", (0.0, -1.0), (0.5, 0.9)),
    "side_step": ("side_step", None, (0.3, 0.5)),
    "crouch_walk": ("crouch_walk", (0.0, 1.0), (0.4, 0.8)),
}


def locomote(state, rng, action, duration=None, speed=None, direction=None):
    gait, move, (lo, hi) = LOCOMOTION[action]
    speed = float(rng.uniform(lo, hi)) if speed is None else float(speed)
    duration = float(rng.uniform(2.5, 4.0)) if duration is None else float(duration)
    if action == "side_step":
        direction = direction or ("left" if rng.random() < 0.5 else "right")
        move = (1.0, 0.0) if direction == "left" else (-1.0, 0.0)
    else:
        direction = {(0.0, 1.0): "forward", (0.0, -1.0): "backward"}[move]
    ch, end, info = stepping(state, gait, move=move, speed=speed, duration=duration, rng=rng)
    label = dict(action=action, speed=round(speed, 3), direction=direction,
                 distance=round(speed * (info["t1"] - info["t0"]), 3))
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
    label = dict(action="spin" if spin else "turn", direction=direction, angle=round(float(np.rad2deg(angle)), 1))
    return ch, label, end


def jump(state, rng, forward=None, height=None):
    forward = float(rng.choice([0.0, rng.uniform(0.4, 0.9)])) if forward is None else float(forward)
    height = float(rng.uniform(0.15, 0.3)) if height is None else float(height)
    grav = 9.81
    flight = 2 * np.sqrt(2 * height / grav)
    crouch, t_off = 0.45, 0.75             # crouch bottom, take-off
    t_land = t_off + flight
    t = _times(t_land + 0.9)
    ch = neutral(state, t)
    fwd = _body_to_world(state.yaw, np.array([0.0, 1.0]))
    # crouch, push up 6 cm onto the toes, fly, land on the toes and absorb with the knees
    dip = 0.16 * np.exp(-((t - crouch) / 0.14) ** 2) + 0.14 * np.sin(np.pi * np.clip((t - t_land) / 0.7, 0, 1))
    y = STAND_HEIGHT - dip + 0.06 * envelope(t, crouch, t_off, t_land, t_land + 0.3)
    air = (t > t_off) & (t < t_land)
    tau = t - t_off
    y_off = STAND_HEIGHT + 0.06 - 0.16 * np.exp(-((t_off - crouch) / 0.14) ** 2)
    v0 = grav * flight / 2
    y[air] = (y_off + v0 * tau - 0.5 * grav * tau ** 2)[air]
    move = smoothstep((t - t_off + 0.08) / (flight + 0.16))
    ch["root"][:, [0, 2]] = state.xz + fwd * forward * move[:, None]
    ch["root"][:, 1] = y
    ch["bend"] = 0.35 * np.exp(-((t - crouch) / 0.18) ** 2) + 0.3 * np.exp(-((t - t_land - 0.15) / 0.18) ** 2)
    ch["pitch"] = 0.6 * ch["bend"]
    u = np.clip((t - t_off) / flight, 0, 1)
    for s in ("l", "r"):
        start = getattr(state, f"toe_{s}")
        toe = np.tile(start, (len(t), 1))
        toe[:, [0, 2]] += fwd * forward * smoothstep(u)[:, None]
        toe[air, 1] = (y - y_off)[air] + 0.12 * np.sin(np.pi * u[air])
        ch[f"toe_{s}"] = toe
        ch[f"fpitch_{s}"] = 0.5 * envelope(t, t_off - 0.15, t_off, t_off + 0.05, t_off + 0.2)
        swing = np.exp(-((t - crouch) / 0.2) ** 2) * -0.25 + np.exp(-((t - t_off) / 0.2) ** 2) * 0.35
        ch[f"wrist_{s}"][:, 2] += swing
        ch[f"wrist_{s}"][:, 1] += np.maximum(swing, 0) * 0.8
    end = State(state.xz + fwd * forward, state.yaw, ch["toe_l"][-1].copy(), ch["toe_r"][-1].copy())
    label = dict(action="jump", forward=round(forward, 3), height=round(height, 3),
                 direction="forward" if forward > 0 else "in_place")
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
    ch, _, _ = _arm_action(state, rng, duration, targets,
                           poles={"l": np.array([1.0, 0.0, -0.3]), "r": np.array([-1.0, 0.0, -0.3])})
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
    ch, _, _ = _arm_action(state, rng, duration, targets, ease=0.45,
                           poles={"l": np.array([1.0, -0.5, 0.0]), "r": np.array([-1.0, -0.5, 0.0])})
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
                ext += np.exp(-((t - 0.6 - (c + 0.5) * period) / 0.09) ** 2)
            out[s] = np.stack([x - np.sign(x) * 0.1 * ext, -0.08 + 0.14 * ext, 0.22 + 0.38 * ext], -1)
        return out
    ch, t, env = _arm_action(state, rng, duration, targets, ease=0.45,
                             poles={"l": np.array([1.0, -1.0, -0.2]), "r": np.array([-1.0, -1.0, -0.2])})
    return ch, dict(action="punch", hand=hand, count=count), state


def kick(state, rng, foot=None, height=None):
    foot = foot or ("left" if rng.random() < 0.5 else "right")
    height = float(rng.uniform(0.4, 0.8)) if height is None else float(height)
    s, o = foot[0], ("r" if foot[0] == "l" else "l")
    t = _times(2.2)
    ch = neutral(state, t)
    fwd = _body_to_world(state.yaw, np.array([0.0, 1.0]))
    lift = envelope(t, 0.55, 1.0, 1.1, 1.6)          # kicking foot in the air
    shift = envelope(t, 0.1, 0.55, 1.6, 2.1)          # weight over the support foot
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
    up = np.sin(np.pi * u) ** 0.8                                # the foot leaves the floor first,
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
        ch[f"wrist_{side}"] = REST_WRIST[side] + lower[:, None] * (np.array([x, -0.30, 0.30]) - REST_WRIST[side])
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
    "wave": wave, "raise_arms": raise_arms, "clap": clap, "punch": punch, "kick": kick,
    "squat": squat, "bow": bow, "sit_down": sit_down, "stand_up": stand_up,
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
