"""Rotation conversions, FK and IK on the 22-joint skeleton: round trips and closed forms."""

import math

import numpy as np
import pytest
import torch
from polydiff.motion import kinematics as kin
from polydiff.motion import rotations as rot
from polydiff.motion import skeleton as sk


def random_rotations(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=g, dtype=torch.float64)
    return rot.quat_to_matrix(q)


def test_skeleton_tables_are_consistent():
    assert sk.NUM_JOINTS == 22 and len(sk.PARENTS) == 22
    # every joint except the root appears exactly once as a chain member after the first
    members = [j for c in sk.KINEMATIC_CHAIN for j in c[1:]]
    assert sorted(members) == list(range(1, 22))
    assert sk.JOINT_NAMES[sk.PARENTS[sk.JOINT_INDEX["left_wrist"]]] == "left_elbow"
    # left is +X, mirror images have mirrored offsets
    assert sk.OFFSETS[sk.JOINT_INDEX["left_hip"], 0] > 0
    np.testing.assert_allclose(sk.OFFSETS[list(sk.MIRROR)] * [-1, 1, 1], sk.OFFSETS)
    # the lowest rest joint is the toe base, 0.92 m below a standing pelvis
    rest = sk.rest_joints()
    assert rest[:, 1].argmin() in sk.TOES and 0.85 < sk.STANDING_PELVIS_HEIGHT < 1.0


def test_quaternion_matrix_axis_angle_6d_round_trips():
    m = random_rotations(500)
    q = rot.matrix_to_quat(m)
    torch.testing.assert_close(rot.quat_to_matrix(q), m, atol=1e-12, rtol=0)
    torch.testing.assert_close(rot.sixd_to_matrix(rot.matrix_to_6d(m)), m, atol=1e-12, rtol=0)
    aa = rot.matrix_to_axis_angle(m)
    assert aa.norm(dim=-1).max() <= math.pi + 1e-9
    torch.testing.assert_close(rot.axis_angle_to_matrix(aa), m, atol=1e-10, rtol=0)
    v = torch.randn(500, 3, dtype=torch.float64)
    torch.testing.assert_close(rot.quat_rotate(q, v), (m @ v[..., None])[..., 0], atol=1e-12, rtol=0)
    # the product of quaternions is the product of matrices
    q2 = rot.matrix_to_quat(random_rotations(500, seed=1))
    torch.testing.assert_close(
        rot.quat_to_matrix(rot.quat_mul(q, q2)),
        rot.quat_to_matrix(q) @ rot.quat_to_matrix(q2),
        atol=1e-12,
        rtol=0,
    )


def test_closed_forms():
    # a quarter turn about +Y takes +Z to +X (the body turns to its left)
    r = rot.rot_y(torch.tensor(math.pi / 2, dtype=torch.float64))
    torch.testing.assert_close(
        r @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64),
        torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64),
        atol=1e-15,
        rtol=0,
    )
    aa = torch.tensor([0.0, math.pi / 2, 0.0], dtype=torch.float64)
    torch.testing.assert_close(rot.axis_angle_to_matrix(aa), r, atol=1e-15, rtol=0)
    u = torch.randn(100, 3, dtype=torch.float64)
    v = torch.randn(100, 3, dtype=torch.float64)
    q = rot.quat_between(u, v)
    torch.testing.assert_close(
        rot.quat_rotate(q, u / u.norm(dim=-1, keepdim=True)),
        v / v.norm(dim=-1, keepdim=True),
        atol=1e-12,
        rtol=0,
    )
    q = rot.quat_between(u, -u)  # opposite directions still give a valid half turn
    torch.testing.assert_close(rot.quat_rotate(q, u), -u, atol=1e-12, rtol=0)


@pytest.mark.parametrize("order", ["ZXY", "XYZ", "ZYX", "YXZ", "XZY", "YZX"])
def test_euler_round_trip(order):
    m = random_rotations(400, seed=2)
    e = rot.matrix_to_euler(m, order)
    torch.testing.assert_close(rot.euler_to_matrix(e, order), m, atol=1e-10, rtol=0)
    # near gimbal lock too
    e0 = torch.tensor([[0.3, math.pi / 2 - 1e-9, -0.7], [1.0, -math.pi / 2, 0.2]], dtype=torch.float64)
    m0 = rot.euler_to_matrix(e0, order)
    torch.testing.assert_close(
        rot.euler_to_matrix(rot.matrix_to_euler(m0, order), order), m0, atol=1e-7, rtol=0
    )


def test_fk_of_identity_is_rest_pose():
    local = torch.eye(3, dtype=torch.float64).expand(22, 3, 3)
    joints = kin.forward_kinematics(local, torch.zeros(3, dtype=torch.float64))
    np.testing.assert_allclose(joints.numpy(), sk.rest_joints(), atol=1e-15)


def test_fk_ik_fk_round_trip_random_rotations():
    g = torch.Generator().manual_seed(3)
    local = rot.axis_angle_to_matrix(0.8 * torch.randn(64, 22, 3, generator=g, dtype=torch.float64))
    root = torch.randn(64, 3, generator=g, dtype=torch.float64)
    joints = kin.forward_kinematics(local, root)
    local_hat, root_hat = kin.inverse_kinematics(joints, refine_steps=0)
    joints_hat = kin.forward_kinematics(local_hat, root_hat)
    assert (joints_hat - joints).norm(dim=-1).max() < 1e-9
    # the rotations of joints with several children (pelvis, spine3) are fully determined
    for j in (0,):
        torch.testing.assert_close(local_hat[:, j], local[:, j], atol=1e-9, rtol=0)


def test_ik_refinement_reduces_error_on_non_rigid_joints():
    g = torch.Generator().manual_seed(4)
    local = rot.axis_angle_to_matrix(0.5 * torch.randn(8, 22, 3, generator=g, dtype=torch.float64))
    joints = kin.forward_kinematics(local, torch.zeros(8, 3, dtype=torch.float64))
    noisy = joints + 0.01 * torch.randn(joints.shape, generator=g, dtype=torch.float64)
    err = {}
    for steps in (0, 40):
        lh, rh = kin.inverse_kinematics(noisy, refine_steps=steps)
        err[steps] = (kin.forward_kinematics(lh, rh) - noisy).norm(dim=-1).mean().item()
    assert err[40] < err[0]
    assert err[40] < 0.02
