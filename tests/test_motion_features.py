"""HumanML3D 263-dim features: layout, closed forms, joints -> features -> joints round trip."""

import numpy as np
import pytest
import torch
from polydiff.motion import features as ft
from polydiff.motion import kinematics as kin
from polydiff.motion import rotations as rot
from polydiff.motion import skeleton as sk
from scipy.ndimage import gaussian_filter1d


def smooth_motion(T=120, turn_rate=0.0, speed=1.2, seed=0, fps=20.0, wobble=0.3):
    """A rigid motion of the skeleton: smooth joint wobbles, root walking along its facing while turning
    at `turn_rate` rad/s."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(T, dtype=torch.float64) / fps
    amp = wobble * torch.rand(22, 3, generator=g, dtype=torch.float64)
    freq = 0.5 + 1.5 * torch.rand(22, 3, generator=g, dtype=torch.float64)
    phase = 6.28 * torch.rand(22, 3, generator=g, dtype=torch.float64)
    aa = amp * torch.sin(freq * t[:, None, None] * 6.28 + phase)
    aa[:, 0] = 0.0
    local = rot.axis_angle_to_matrix(aa)
    yaw = turn_rate * t
    local[:, 0] = rot.rot_y(yaw)
    heading = torch.stack([torch.sin(yaw), torch.zeros_like(yaw), torch.cos(yaw)], -1)
    root = torch.cumsum(heading * speed / fps, 0) + torch.tensor([0.3, 0.95, -0.2], dtype=torch.float64)
    return kin.forward_kinematics(local, root)


def test_layout_index_ranges():
    assert (ft.ROOT_ROT_VEL, ft.ROOT_LIN_VEL, ft.ROOT_Y) == (slice(0, 1), slice(1, 3), slice(3, 4))
    assert (ft.RIC, ft.ROT, ft.LOCAL_VEL, ft.FOOT_CONTACT) == (
        slice(4, 67),
        slice(67, 193),
        slice(193, 259),
        slice(259, 263),
    )
    f = ft.joints_to_features(smooth_motion(T=30))
    assert f.shape == (29, 263) and f.dtype == np.float32
    assert set(np.unique(f[:, ft.FOOT_CONTACT])) <= {0.0, 1.0}


@pytest.mark.parametrize("turn_rate", [0.0, 1.5, -3.0])
def test_round_trip_joints_features_joints(turn_rate):
    joints = smooth_motion(T=160, turn_rate=turn_rate)
    canon = ft.canonicalize(joints)
    feats = ft.joints_to_features(joints, uniform=False)
    back = ft.features_to_joints(torch.from_numpy(feats).double())
    err = (back - canon[:-1]).norm(dim=-1).max().item()
    assert err <= 1e-4, err
    # float32 features, float32 recovery: still inside the budget
    back32 = ft.features_to_joints(torch.from_numpy(feats))
    assert (back32.double() - canon[:-1]).norm(dim=-1).max().item() <= 1e-4


def test_uniform_skeleton_keeps_our_skeleton_and_rescales_others():
    joints = smooth_motion(T=40, seed=1)
    np.testing.assert_allclose(ft.uniform_skeleton(joints).numpy(), joints.numpy(), atol=1e-9)
    big = joints * 1.3
    u = ft.uniform_skeleton(big)
    lengths = (u[:, 1:] - u[:, list(sk.PARENTS[1:])]).norm(dim=-1)
    np.testing.assert_allclose(
        lengths.numpy(), np.broadcast_to(sk.BONE_LENGTHS[1:], lengths.shape), atol=1e-9
    )
    # every bone keeps its direction; a uniformly scaled body maps back onto ours, root path included
    np.testing.assert_allclose(u.numpy(), joints.numpy(), atol=1e-9)
    warped = joints.clone()
    warped[:, 7:] += 0.05  # lengths change below the knees
    u = ft.uniform_skeleton(warped)
    d_in = warped[:, 1:] - warped[:, list(sk.PARENTS[1:])]
    d_out = u[:, 1:] - u[:, list(sk.PARENTS[1:])]
    cos = (d_in * d_out).sum(-1) / (d_in.norm(dim=-1) * d_out.norm(dim=-1))
    assert (cos > 1 - 1e-12).all()


def test_canonical_frame_and_what_is_lost():
    joints = smooth_motion(T=50, turn_rate=0.7, seed=2)
    # rotate and shift the whole motion: features do not change (initial facing / position are lost)
    r = rot.rot_y(torch.tensor(2.1, dtype=torch.float64))
    moved = (r @ joints[..., None])[..., 0] + torch.tensor([5.0, 0.3, -2.0], dtype=torch.float64)
    np.testing.assert_allclose(
        ft.joints_to_features(moved, uniform=False), ft.joints_to_features(joints, uniform=False), atol=2e-5
    )
    c = ft.canonicalize(joints)
    assert abs(c[..., 1].min().item()) < 1e-12
    np.testing.assert_allclose(c[0, 0, [0, 2]].numpy(), 0.0, atol=1e-12)
    f0 = ft.facing_direction(c[0])
    np.testing.assert_allclose(f0.numpy(), [0.0, 0.0, 1.0], atol=1e-12)


def test_closed_form_root_velocities():
    fps, speed, rate = 20.0, 1.2, 1.0
    joints = smooth_motion(T=200, turn_rate=rate, speed=speed, wobble=0.0)
    f = ft.joints_to_features(joints, uniform=False)
    mid = slice(90, 110)  # away from the edges of the facing smoothing
    # turning left (positive yaw) by rate/fps per frame is a half-angle of -rate/fps/2 per frame
    np.testing.assert_allclose(f[mid, 0], -rate / fps / 2, atol=1e-5)
    # walking along the facing: the root velocity is +Z in the root frame
    np.testing.assert_allclose(f[mid, 1], 0.0, atol=1e-4)
    np.testing.assert_allclose(f[mid, 2], speed / fps, atol=1e-4)


def test_gaussian_smoothing_matches_scipy():
    x = torch.randn(300, 3, dtype=torch.float64)
    ref = gaussian_filter1d(x.numpy(), 20, axis=0, mode="nearest")
    np.testing.assert_allclose(ft._smooth(x, 20.0).numpy(), ref, atol=1e-12)


def test_bone_rotations_reproduce_bone_directions():
    joints = ft.canonicalize(smooth_motion(T=20, seed=3))
    r_rot = ft.root_facing_quat(joints)
    q = ft.bone_rotations(joints, r_rot)
    # composing along each chain from the root facing turns each raw direction onto the bone
    for chain in sk.KINEMATIC_CHAIN:
        acc = r_rot
        for a, b in zip(chain[:-1], chain[1:]):
            acc = rot.quat_mul(acc, q[:, b])
            d = rot.quat_rotate(acc, torch.tensor(sk.RAW_OFFSETS[b]).expand(20, 3))
            bone = joints[:, b] - joints[:, a]
            np.testing.assert_allclose(d.numpy(), (bone / bone.norm(dim=-1, keepdim=True)).numpy(), atol=1e-9)


def test_recovery_is_differentiable():
    feats = torch.from_numpy(ft.joints_to_features(smooth_motion(T=30))).double().requires_grad_(True)
    joints = ft.features_to_joints(feats[None])
    assert joints.shape == (1, 29, 22, 3)
    joints[0, -1, 21].sum().backward()
    grad = feats.grad
    assert torch.isfinite(grad).all()
    # the last wrist depends on every earlier root velocity and on its own ric entry
    assert grad[:-1, 1:3].abs().sum() > 0 and grad[-1, 4 + 20 * 3 : 4 + 21 * 3].abs().sum() > 0
    assert torch.autograd.gradcheck(
        lambda f: ft.features_to_joints(f), (feats[:4].detach().clone().requires_grad_(True),), fast_mode=True
    )


def test_mean_std_blocks_and_normalisation():
    fs = [ft.joints_to_features(smooth_motion(T=40, seed=s, turn_rate=0.5 * s)) for s in range(3)]
    mean, std = ft.mean_std(fs)
    assert mean.shape == std.shape == (263,)
    assert np.unique(std[ft.RIC]).size == 1 and np.unique(std[ft.ROT]).size == 1
    x = fs[0]
    np.testing.assert_allclose(ft.denormalize(ft.normalize(x, mean, std), mean, std), x, atol=1e-5)


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ft.FeatureError, match="22, 3"):
        ft.joints_to_features(np.zeros((10, 21, 3)))
    with pytest.raises(ft.FeatureError, match="263"):
        ft.features_to_joints(torch.zeros(5, 262))


def test_recover_from_rotations_matches_positions_on_rigid_motion():
    joints = smooth_motion(T=80, turn_rate=1.2, seed=5)
    feats = torch.from_numpy(ft.joints_to_features(joints, uniform=False)).double()
    by_rot = ft.features_to_joints_rot(feats)
    canon = ft.canonicalize(joints)[:-1]
    assert (by_rot - canon).norm(dim=-1).max().item() < 1e-4
    # on features from a model the positions may stretch the bones; FK of the rotations never does
    noisy = feats + 0.05 * torch.randn_like(feats)
    j = ft.features_to_joints_rot(noisy)
    lengths = (j[:, 1:] - j[:, list(sk.PARENTS[1:])]).norm(dim=-1)
    np.testing.assert_allclose(
        lengths.numpy(), np.broadcast_to(sk.BONE_LENGTHS[1:], lengths.shape), atol=1e-9
    )
    jr = ft.features_to_joints(noisy)
    stretch = (jr[:, 1:] - jr[:, list(sk.PARENTS[1:])]).norm(dim=-1) - torch.from_numpy(sk.BONE_LENGTHS[1:])
    assert stretch.abs().max() > 1e-2
