"""The 22-joint SMPL / HumanML3D skeleton: joint order, kinematic chain, rest offsets.

Conventions (those of HumanML3D): metres, +Y up, the body faces +Z in its rest pose, so the body's left
is +X. Joint order is SMPL's first 22 joints (the hands are dropped).

Two sets of offsets live here, on purpose:

* `RAW_OFFSETS` are the unit directions HumanML3D's pre-processing uses for every bone (arms hang
  straight down, the feet point along +Z). The 263-dim features define their per-bone rotations against
  these directions, so `features.py` uses them and nothing else.
* `OFFSETS` are the rest offsets in metres of this project's body (an adult of about 1.7 m standing with
  the arms hanging, shoulders out to the side, a slight forward foot): what FK, the procedural corpus and
  BVH export use. Only their lengths matter to the features (the "uniform skeleton" step).
The numbers are our own, rounded and left/right symmetric, in the range of the SMPL neutral template.
"""

from __future__ import annotations

import numpy as np

JOINT_NAMES = (
    "pelvis",
    "left_hip",
    "right_hip",
    "spine1",
    "left_knee",
    "right_knee",
    "spine2",
    "left_ankle",
    "right_ankle",
    "spine3",
    "left_foot",
    "right_foot",
    "neck",
    "left_collar",
    "right_collar",
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
)
NUM_JOINTS = len(JOINT_NAMES)
JOINT_INDEX = {name: i for i, name in enumerate(JOINT_NAMES)}

# Chains from the root outwards (HumanML3D's `t2m_kinematic_chain`): right leg, left leg, spine+head,
# right arm, left arm. The two arm chains start at spine3.
KINEMATIC_CHAIN = (
    (0, 2, 5, 8, 11),
    (0, 1, 4, 7, 10),
    (0, 3, 6, 9, 12, 15),
    (9, 14, 17, 19, 21),
    (9, 13, 16, 18, 20),
)


def _parents_from_chain(chain) -> tuple[int, ...]:
    parents = [-1] * NUM_JOINTS
    for c in chain:
        for a, b in zip(c[:-1], c[1:]):
            parents[b] = a
    return tuple(parents)


PARENTS = _parents_from_chain(KINEMATIC_CHAIN)
CHILDREN = tuple(tuple(j for j in range(NUM_JOINTS) if PARENTS[j] == i) for i in range(NUM_JOINTS))
# Every parent index is smaller than its child's, so a single pass in index order is a valid FK order.
assert all(p < j for j, p in enumerate(PARENTS) if p >= 0)

# Unit bone directions of HumanML3D (`t2m_raw_offsets`).
RAW_OFFSETS = np.array(
    [
        [0, 0, 0],
        [1, 0, 0],
        [-1, 0, 0],
        [0, 1, 0],
        [0, -1, 0],
        [0, -1, 0],
        [0, 1, 0],
        [0, -1, 0],
        [0, -1, 0],
        [0, 1, 0],
        [0, 0, 1],
        [0, 0, 1],
        [0, 1, 0],
        [1, 0, 0],
        [-1, 0, 0],
        [0, 0, 1],
        [0, -1, 0],
        [0, -1, 0],
        [0, -1, 0],
        [0, -1, 0],
        [0, -1, 0],
        [0, -1, 0],
    ],
    dtype=np.float64,
)

# Rest offsets in metres, child minus parent, rest pose: standing, arms hanging at the sides.
_LEFT = {  # left side only; the right side mirrors x
    "left_hip": (0.060, -0.090, 0.000),
    "left_knee": (0.000, -0.380, 0.000),
    "left_ankle": (0.000, -0.400, 0.000),
    "left_foot": (0.000, -0.050, 0.120),
    "left_collar": (0.075, 0.110, -0.010),
    "left_shoulder": (0.110, 0.040, 0.000),
    "left_elbow": (0.000, -0.260, 0.000),
    "left_wrist": (0.000, -0.250, 0.000),
}
_CENTRE = {
    "pelvis": (0.0, 0.0, 0.0),
    "spine1": (0.0, 0.120, -0.010),
    "spine2": (0.0, 0.140, 0.010),
    "spine3": (0.0, 0.060, 0.000),
    "neck": (0.0, 0.210, -0.020),
    "head": (0.0, 0.090, 0.050),
}


def _build_offsets() -> np.ndarray:
    off = np.zeros((NUM_JOINTS, 3))
    for name, v in _CENTRE.items():
        off[JOINT_INDEX[name]] = v
    for name, (x, y, z) in _LEFT.items():
        off[JOINT_INDEX[name]] = (x, y, z)
        off[JOINT_INDEX[name.replace("left_", "right_")]] = (-x, y, z)
    return off


OFFSETS = _build_offsets()
BONE_LENGTHS = np.linalg.norm(OFFSETS, axis=1)  # (22,), 0 for the root

# Indices the field uses by name.
FACE_JOINTS = (2, 1, 17, 16)  # right hip, left hip, right shoulder, left shoulder (facing direction)
FOOT_LEFT = (7, 10)  # left ankle, left foot (toe base): HumanML3D foot-contact joints
FOOT_RIGHT = (8, 11)
TOES = (10, 11)  # the joints skating metrics look at
LEG_SCALE_BONES = (5, 8)  # right shin + right thigh-to-ankle: HumanML3D's scale reference (l_idx1, l_idx2)
MIRROR = tuple(
    JOINT_INDEX[n.replace("left_", "@").replace("right_", "left_").replace("@", "right_")]
    for n in JOINT_NAMES
)  # joint index of the mirror-image joint


def rest_joints(offsets: np.ndarray = OFFSETS) -> np.ndarray:
    """Joint positions of the rest pose with the pelvis at the origin: (22, 3)."""
    pos = np.zeros((NUM_JOINTS, 3))
    for j in range(1, NUM_JOINTS):
        pos[j] = pos[PARENTS[j]] + offsets[j]
    return pos


# Standing height of the pelvis so that the lowest joint (the toe base) touches y = 0.
STANDING_PELVIS_HEIGHT = float(-rest_joints()[:, 1].min())


def offsets_from_joints(joints: np.ndarray) -> np.ndarray:
    """Offsets (22, 3) with HumanML3D's raw directions and the bone lengths measured in `joints` (22, 3)."""
    lengths = np.linalg.norm(joints[1:] - joints[list(PARENTS[1:])], axis=-1)
    return np.concatenate([np.zeros((1, 3)), RAW_OFFSETS[1:] * lengths[:, None]])
