"""Footstep locomotion for the procedural corpus, and the body state actions hand to each other.

`State` is where the body stands between actions (pelvis xz, facing, the two planted toe bases).
`stepping` moves it: walk, jog, run, walking backwards, side steps, crouch-walk, turns and spins are
one footstep planner with per-gait timing. Feet alternate; each step lifts one toe base, carries it
(rising before it travels, travelling before it lands) to where the pelvis will be half-way through
that foot's next stance, and sets it down; a planted toe does not move at all until it lifts again,
so the ground truth has no foot skating. The last two steps close the feet side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .posing import REST_POLE, REST_WRIST, STANCE_HALF_WIDTH, STAND_HEIGHT, TOE_FORWARD

FPS = 20.0
SETTLE = 0.25  # seconds of stillness-seeking at the end of stepping actions


@dataclass(frozen=True)
class State:
    xz: np.ndarray  # pelvis position on the floor (2,)
    yaw: float  # facing
    toe_l: np.ndarray  # planted toe bases (3,)
    toe_r: np.ndarray
    seated: bool = False


def stance(xz, yaw, width=STANCE_HALF_WIDTH) -> State:
    return State(
        np.asarray(xz, float), float(yaw), _foot_at(xz, yaw, +1, width), _foot_at(xz, yaw, -1, width)
    )


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
        "root": np.tile([state.xz[0], h, state.xz[1]], (n, 1)),
        "yaw": np.full(n, state.yaw),
        "pitch": np.zeros(n),
        "bend": np.zeros(n),
        "twist": np.zeros(n),
        "side": np.zeros(n),
        "head": np.zeros(n),
        "toe_l": np.tile(state.toe_l, (n, 1)),
        "toe_r": np.tile(state.toe_r, (n, 1)),
        "fyaw_l": np.full(n, state.yaw),
        "fyaw_r": np.full(n, state.yaw),
        "fpitch_l": np.zeros(n),
        "fpitch_r": np.zeros(n),
        "wrist_l": np.tile(REST_WRIST["l"], (n, 1)),
        "wrist_r": np.tile(REST_WRIST["r"], (n, 1)),
        "pole_l": np.tile(REST_POLE["l"], (n, 1)),
        "pole_r": np.tile(REST_POLE["r"], (n, 1)),
    }


# -- stepping ----------------------------------------------------------------------------------
# per gait: step period Ts, swing time Tsw (toe base off the floor), pelvis height, bob, step height (lift),
# forward lean (bend), arm swing, and the stance half-width where it differs
GAITS = {
    "walk": dict(Ts=0.50, Tsw=0.55, height=0.87, bob=0.015, lift=0.10, bend=0.05, arm=0.12),
    "jog": dict(Ts=0.36, Tsw=0.50, height=0.84, bob=0.04, lift=0.16, bend=0.12, arm=0.16),
    "run": dict(Ts=0.30, Tsw=0.45, height=0.82, bob=0.05, lift=0.22, bend=0.22, arm=0.22),
    "walk_backward": dict(Ts=0.55, Tsw=0.55, height=0.87, bob=0.01, lift=0.08, bend=-0.03, arm=0.06),
    "side_step": dict(Ts=0.50, Tsw=0.40, height=0.88, bob=0.01, lift=0.08, bend=0.0, arm=0.0, width=0.16),
    "crouch_walk": dict(Ts=0.60, Tsw=0.50, height=0.70, bob=0.01, lift=0.10, bend=0.35, arm=0.05),
    "turn": dict(Ts=0.45, Tsw=0.40, height=0.89, bob=0.0, lift=0.09, bend=0.0, arm=0.03),
    "spin": dict(Ts=0.32, Tsw=0.30, height=0.88, bob=0.0, lift=0.09, bend=0.0, arm=0.08),
}


def stepping(
    state: State,
    gait: str,
    move=(0.0, 0.0),
    speed=0.0,
    turn=0.0,
    duration=None,
    n_steps=None,
    first=None,
    rng=None,
):
    """Footstep locomotion. move: unit direction in the body frame (x left, z forward); speed: mean
    speed while moving (m/s); turn: total yaw change (radians, + left), which with a move bends the
    path into an arc (the direction of travel turns with the body)."""
    g = GAITS[gait]
    Ts, Tsw, width = g["Ts"], g["Tsw"], g.get("width", STANCE_HALF_WIDTH)
    t0 = 0.2
    if n_steps is None:
        n_steps = max(2, int(round((duration - t0 - SETTLE - Tsw) / Ts)) + 1)
    t1 = t0 + (n_steps - 1) * Ts + Tsw
    t = _times(t1 + SETTLE)
    prog = ease_progress((t - t0) / (t1 - t0))
    dist = speed * (t1 - t0)
    yaw = state.yaw + turn * prog
    # the pelvis travels along its own (turning) facing: a straight line, or an arc when turning
    step = np.diff(dist * prog, prepend=0.0)
    heading = 0.5 * (yaw + np.concatenate([yaw[:1], yaw[:-1]]))
    xz = state.xz + np.cumsum(_body_to_world(heading, np.asarray(move, float)[None]) * step[:, None], 0)
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
    # fraction of the swing spent rising to 6 cm before travelling (toe height is lift * sin(pi u)^0.6)
    u0 = float(np.clip(np.arcsin(min(1.0, (0.06 / g["lift"]) ** (1 / 0.6))) / np.pi, 0.03, 0.2))
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
        w = smoothstep((u - u0) / (1 - 2 * u0))[:, None]
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
