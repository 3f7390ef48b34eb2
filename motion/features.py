"""The HumanML3D 263-dim motion representation (Guo et al., CVPR 2022) and its inverse.

Layout of one frame (22 joints), as published:

    [0:1]     root angular velocity about Y (half-angle per frame, radians)
    [1:3]     root linear velocity in the root's own frame (x, z), metres per frame
    [3:4]     root height y
    [4:67]    ric: 21 x 3 joint positions relative to the root, xz re-centred, rotated to face +Z
    [67:193]  rot: 21 x 6 per-bone rotations, cont6d (first two matrix columns)
    [193:259] 22 x 3 joint velocities in the root frame
    [259:263] foot contacts (left ankle, left toe, right ankle, right toe), 0/1

Pre-processing follows the reference `motion_representation.py`: retarget to the uniform skeleton (scale by
leg length, IK then FK), put the lowest joint on the floor, move the first root xz to the origin, turn the
first frame to face +Z (facing = up x (right hip - left hip + right shoulder - left shoulder)); the root
facing used for the features is the reference IK's facing (see `facing_direction`) smoothed by a
Gaussian of sigma 20 frames, with the first frame forced to the identity (as the packaged fork of the
reference does: the original keeps the smoothed facing there, which makes `recover_from_ric` return the
motion turned by that small angle). The per-bone rotations are HumanML3D's: for each chain, the shortest arc
from the raw rest direction of the bone to the observed one, relative to the previous bone of the chain
(the first bone of a chain relative to the root facing).

One deliberate difference: the reference takes arcsin of the y part of `r[t+1] * r[t]^-1` without
fixing the quaternion's sign, which flips the sign of the angular velocity whenever the (half-angle)
facing wraps around; we take the w >= 0 representative first. Elsewhere the numbers are the
reference's, except that the uniform skeleton is ours (`skeleton.OFFSETS`, used by everything here),
not the one the reference measures on HumanML3D clip 000021.

What the representation loses: T frames give T - 1 feature rows (the last frame's velocity is unknown);
the initial xz position, the initial facing and the floor height are normalised away; bone lengths are
those of the uniform skeleton; foot contacts are thresholded. `features_to_joints` (the reference's
`recover_from_ric`) reproduces the canonical joints of the first T - 1 frames exactly up to float
round-off, and is plain differentiable torch.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import skeleton as sk
from .rotations import (
    matrix_to_6d,
    quat_between,
    quat_canonical,
    quat_conj,
    quat_mul,
    quat_rotate,
    quat_to_matrix,
    sixd_to_matrix,
)

FEATURE_DIM = 263
ROOT_ROT_VEL = slice(0, 1)
ROOT_LIN_VEL = slice(1, 3)
ROOT_Y = slice(3, 4)
RIC = slice(4, 4 + 21 * 3)
ROT = slice(RIC.stop, RIC.stop + 21 * 6)
LOCAL_VEL = slice(ROT.stop, ROT.stop + 22 * 3)
FOOT_CONTACT = slice(LOCAL_VEL.stop, LOCAL_VEL.stop + 4)
assert FOOT_CONTACT.stop == FEATURE_DIM

FEET_THRESHOLD = 0.002  # squared displacement per frame (m^2), HumanML3D's `feet_thre`
FACING_SIGMA = 20.0  # frames; Gaussian smoothing of the facing direction (`smooth_forward=True`)
_UP = (0.0, 1.0, 0.0)


class FeatureError(ValueError):
    """Joints or features of the wrong shape."""


def _joints_tensor(joints) -> torch.Tensor:
    j = torch.as_tensor(np.asarray(joints) if not isinstance(joints, torch.Tensor) else joints)
    if j.ndim != 3 or j.shape[1:] != (sk.NUM_JOINTS, 3):
        raise FeatureError(f"joints must have shape (frames, 22, 3), got {tuple(j.shape)}")
    if j.shape[0] < 2:
        raise FeatureError("need at least 2 frames of joints to compute velocities")
    return j.to(torch.float64)


def facing_direction(joints: torch.Tensor, reference_ik: bool = False) -> torch.Tensor:
    """Unit horizontal facing of each frame: (..., 22, 3) -> (..., 3), from up x across with
    across = (right hip - left hip) + (right shoulder - left shoulder).

    `reference_ik=True` reproduces the facing of the reference's IK (the root rotation inside the
    features), which unpacks the hip indices the other way round: across = (left hip - right hip) +
    (right shoulder - left shoulder). The shoulders are wider than the hips, so it still points forward,
    but it follows the chest more than the pelvis; we keep it so our features match published ones."""
    r_hip, l_hip, r_sdr, l_sdr = sk.FACE_JOINTS
    hips = joints[..., r_hip, :] - joints[..., l_hip, :]
    across = (-hips if reference_ik else hips) + (joints[..., r_sdr, :] - joints[..., l_sdr, :])
    across = F.normalize(across, dim=-1)
    fwd = torch.cross(joints.new_tensor(_UP).expand_as(across), across, dim=-1)
    return F.normalize(fwd, dim=-1)


def uniform_skeleton(joints: torch.Tensor) -> torch.Tensor:
    """Retarget (T, 22, 3) joints to this project's bone lengths, as the reference's IK + FK does: every
    bone keeps its direction and takes the target length; the root path is scaled by the ratio of leg
    lengths (shin + thigh-to-ankle bones of the first frame)."""
    src_len = (joints[0, 1:] - joints[0, list(sk.PARENTS[1:])]).norm(dim=-1)
    tgt_len = joints.new_tensor(sk.BONE_LENGTHS)
    legs = list(sk.LEG_SCALE_BONES)
    scale = tgt_len[legs].sum() / src_len[[i - 1 for i in legs]].sum()
    out = [joints[:, 0] * scale]
    for c in range(1, sk.NUM_JOINTS):
        bone = joints[:, c] - joints[:, sk.PARENTS[c]]
        out.append(out[sk.PARENTS[c]] + F.normalize(bone, dim=-1) * tgt_len[c])
    return torch.stack(out, dim=1)


def canonicalize(joints, uniform: bool = False) -> torch.Tensor:
    """(T, 22, 3) -> (T, 22, 3): [uniform skeleton], lowest joint on y = 0, first root xz at the
    origin, first frame facing +Z. The frame in which the features are defined."""
    j = _joints_tensor(joints)
    if uniform:
        j = uniform_skeleton(j)
    j = j.clone()
    j[..., 1] -= j[..., 1].min()
    j = j - j[0, 0] * j.new_tensor([1.0, 0.0, 1.0])
    q = quat_between(facing_direction(j[0]), j.new_tensor([0.0, 0.0, 1.0]))
    return quat_rotate(q.expand(j.shape[:-1] + (4,)), j)


def _smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian filter along time with 'nearest' edges (scipy's gaussian_filter1d, truncate 4): (T, C)."""
    if sigma <= 0:
        return x
    radius = int(4.0 * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).flip(0)
    padded = F.pad(x.T[None], (radius, radius), mode="replicate")
    return F.conv1d(padded.transpose(0, 1), k[None, None]).squeeze(1).T


def root_facing_quat(joints: torch.Tensor, sigma: float = FACING_SIGMA) -> torch.Tensor:
    """HumanML3D's root rotation r[t] (T, 4): turns the (smoothed) facing of frame t to +Z; r[0] = 1."""
    fwd = F.normalize(_smooth(facing_direction(joints, reference_ik=True), sigma), dim=-1)
    q = quat_between(fwd, fwd.new_tensor([0.0, 0.0, 1.0]).expand_as(fwd))
    return torch.cat([q.new_tensor([[1.0, 0.0, 0.0, 0.0]]), q[1:]], dim=0)


def bone_rotations(joints: torch.Tensor, r_rot: torch.Tensor) -> torch.Tensor:
    """HumanML3D's per-bone rotations (T, 22, 4): rotation [j] takes the raw rest direction of the bone
    parent(j) -> j onto the observed direction, relative to the previous bone of its chain."""
    raw = joints.new_tensor(sk.RAW_OFFSETS)
    quats = [r_rot] + [None] * (sk.NUM_JOINTS - 1)
    for chain in sk.KINEMATIC_CHAIN:
        acc = r_rot
        for a, b in zip(chain[:-1], chain[1:]):
            swing = quat_between(raw[b].expand_as(joints[:, b]), joints[:, b] - joints[:, a])
            quats[b] = quat_mul(quat_conj(acc), swing)
            acc = swing
    return torch.stack(quats, dim=1)


def foot_contacts(joints: torch.Tensor, threshold: float = FEET_THRESHOLD) -> torch.Tensor:
    """(T, 22, 3) -> (T - 1, 4): 1 where the squared per-frame displacement is below `threshold`."""
    idx = list(sk.FOOT_LEFT) + list(sk.FOOT_RIGHT)
    disp = ((joints[1:, idx] - joints[:-1, idx]) ** 2).sum(-1)
    return (disp < threshold).to(joints.dtype)


def joints_to_features(
    joints,
    uniform: bool = True,
    canonical: bool = True,
    feet_threshold: float = FEET_THRESHOLD,
    facing_sigma: float = FACING_SIGMA,
) -> np.ndarray:
    """Joint positions (T, 22, 3) in metres -> HumanML3D features (T - 1, 263), float32.

    `canonical=False` skips the floor / origin / facing normalisation (for joints already there)."""
    j = _joints_tensor(joints)
    if canonical:
        j = canonicalize(j, uniform=uniform)
    elif uniform:
        j = uniform_skeleton(j)
    T = j.shape[0]
    r_rot = root_facing_quat(j, facing_sigma)  # (T, 4)
    # root angular velocity: half-angle of r[t+1] r[t]^-1, w >= 0 representative
    dq = quat_canonical(quat_mul(r_rot[1:], quat_conj(r_rot[:-1])))
    r_vel = torch.asin(dq[:, 2:3].clamp(-1.0, 1.0))  # (T-1, 1)
    l_vel = quat_rotate(r_rot[1:], j[1:, 0] - j[:-1, 0])[:, [0, 2]]  # (T-1, 2)
    root_y = j[:-1, 0, 1:2]  # (T-1, 1)
    local = j - j[:, :1] * j.new_tensor([1.0, 0.0, 1.0])
    ric = quat_rotate(r_rot[:, None].expand(T, sk.NUM_JOINTS, 4), local)[:-1, 1:].reshape(T - 1, -1)
    rot = matrix_to_6d(quat_to_matrix(bone_rotations(j, r_rot)))[:-1, 1:].reshape(T - 1, -1)
    vel = quat_rotate(r_rot[:-1, None].expand(T - 1, sk.NUM_JOINTS, 4), j[1:] - j[:-1]).reshape(T - 1, -1)
    feet = foot_contacts(j, feet_threshold)
    return torch.cat([r_vel, l_vel, root_y, ric, rot, vel, feet], dim=-1).numpy().astype(np.float32)


def recover_root(features: torch.Tensor):
    """Root yaw (half-angle, (..., T)) and root position (..., T, 3) from features (..., T, 263)."""
    rot_vel = features[..., 0]
    angle = torch.cat([torch.zeros_like(rot_vel[..., :1]), torch.cumsum(rot_vel[..., :-1], dim=-1)], dim=-1)
    c, s = torch.cos(2 * angle), torch.sin(2 * angle)
    # r^-1 is a turn by -2 * angle about +Y: x' = c x - s z, z' = s x + c z
    vx, vz = features[..., :-1, 1], features[..., :-1, 2]
    dx = c[..., 1:] * vx - s[..., 1:] * vz
    dz = s[..., 1:] * vx + c[..., 1:] * vz
    zero = torch.zeros_like(vx[..., :1])
    x = torch.cumsum(torch.cat([zero, dx], dim=-1), dim=-1)
    z = torch.cumsum(torch.cat([zero, dz], dim=-1), dim=-1)
    return angle, torch.stack([x, features[..., 3], z], dim=-1)


def features_to_joints(features) -> torch.Tensor:
    """HumanML3D `recover_from_ric`: features (..., T, 263) -> joints (..., T, 22, 3). Differentiable."""
    f = features if isinstance(features, torch.Tensor) else torch.as_tensor(np.asarray(features))
    if f.shape[-1] != FEATURE_DIM:
        raise FeatureError(f"features must end in {FEATURE_DIM} channels, got shape {tuple(f.shape)}")
    angle, root = recover_root(f)
    ric = f[..., RIC].reshape(f.shape[:-1] + (21, 3))
    c, s = torch.cos(2 * angle)[..., None], torch.sin(2 * angle)[..., None]
    x = c * ric[..., 0] - s * ric[..., 2] + root[..., None, 0]
    z = s * ric[..., 0] + c * ric[..., 2] + root[..., None, 2]
    body = torch.stack([x, ric[..., 1], z], dim=-1)
    return torch.cat([root[..., None, :], body], dim=-2)


def features_to_joints_rot(features, bone_lengths=None) -> torch.Tensor:
    """HumanML3D `recover_from_rot`: joints (..., T, 22, 3) by forward kinematics of the per-bone
    rotations (the `rot` block) on the uniform skeleton, root from the root channels. Every bone has
    exactly its length in `bone_lengths` (22,) (default: this skeleton's), so the result is a rigid
    motion that IK / BVH export reproduce exactly, unlike `features_to_joints`, whose bones may stretch
    when the features come from a model. Differentiable."""
    f = features if isinstance(features, torch.Tensor) else torch.as_tensor(np.asarray(features))
    if f.shape[-1] != FEATURE_DIM:
        raise FeatureError(f"features must end in {FEATURE_DIM} channels, got shape {tuple(f.shape)}")
    lengths = f.new_tensor(sk.BONE_LENGTHS if bone_lengths is None else bone_lengths)
    angle, root = recover_root(f)
    zero = torch.zeros_like(angle)
    r_rot = quat_to_matrix(torch.stack([torch.cos(angle), zero, torch.sin(angle), zero], dim=-1))
    rot = sixd_to_matrix(f[..., ROT].reshape(f.shape[:-1] + (21, 6)))  # (..., T, 21, 3, 3)
    raw = f.new_tensor(sk.RAW_OFFSETS)
    joints: list = [root] + [None] * (sk.NUM_JOINTS - 1)
    for chain in sk.KINEMATIC_CHAIN:
        acc = r_rot
        for a, b in zip(chain[:-1], chain[1:]):
            acc = acc @ rot[..., b - 1, :, :]
            joints[b] = joints[a] + (acc @ (raw[b] * lengths[b]))
    return torch.stack(joints, dim=-2)


# -- normalisation ------------------------------------------------------------------------------
def mean_std(features: list[np.ndarray], feet_bias: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Mean.npy / Std.npy as HumanML3D computes them: per-channel mean; the std averaged within each
    block of the layout (so no channel is blown up by a tiny variance), the foot contacts' std divided
    by `feet_bias`."""
    data = np.concatenate([np.asarray(f, dtype=np.float64) for f in features], axis=0)
    mean, std = data.mean(0), data.std(0)
    for block in (ROOT_ROT_VEL, ROOT_LIN_VEL, ROOT_Y, RIC, ROT, LOCAL_VEL):
        std[block] = std[block].mean()
    std[FOOT_CONTACT] = std[FOOT_CONTACT].mean() / feet_bias
    std = np.maximum(std, 1e-8)
    return mean.astype(np.float32), std.astype(np.float32)


def normalize(features, mean, std):
    return (features - mean) / std


def denormalize(features, mean, std):
    return features * std + mean
