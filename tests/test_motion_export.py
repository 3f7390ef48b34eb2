"""BVH export -> independent reader -> FK round trip; foot-lock clean-up; bad inputs."""

import numpy as np
import pytest
import torch

from polydiff.motion import bvh, footlock, metrics, procedural
from polydiff.motion import kinematics as kin
from polydiff.motion import rotations as rot
from polydiff.motion import skeleton as sk
from polydiff.motion.features import canonicalize


@pytest.fixture(scope="module")
def clip():
    rng = np.random.default_rng(11)
    joints, _ = procedural.perform(["walk", ("turn", {"angle": 135, "direction": "right"}), "kick"], rng)
    return canonicalize(joints).numpy()


def mpjpe(a, b):
    return float(np.linalg.norm(a - b, axis=-1).mean())


def by_name(read):
    order = [read["names"].index(n) for n in sk.JOINT_NAMES]
    return read["positions"][:, order]


def test_bvh_round_trip_procedural_motion(tmp_path, clip):
    path, encoded = bvh.export_bvh(tmp_path / "walk.bvh", clip, fps=20, clean_feet=False)
    # the procedural motion is rigid on our skeleton: IK already reproduces it
    assert mpjpe(encoded, clip) < 1e-6
    read = bvh.read_bvh(path)
    assert read["names"][0] == "pelvis" and len(read["names"]) == 22
    assert abs(read["frame_time"] - 0.05) < 1e-9
    assert read["channels"][0] == ["Xposition", "Yposition", "Zposition", "Zrotation", "Xrotation", "Yrotation"]
    assert all(c == ["Zrotation", "Xrotation", "Yrotation"] for c in read["channels"][1:])
    assert mpjpe(by_name(read), clip) <= 1e-3
    assert np.abs(by_name(read) - clip).max() <= 1e-3


def test_bvh_round_trip_random_rotations_in_centimetres(tmp_path):
    g = torch.Generator().manual_seed(0)
    local = rot.axis_angle_to_matrix(1.2 * torch.randn(30, 22, 3, generator=g, dtype=torch.float64))
    root = torch.randn(30, 3, generator=g, dtype=torch.float64)
    joints = kin.forward_kinematics(local, root).numpy()
    path = bvh.write_bvh(tmp_path / "r.bvh", local, root, fps=30, units="cm")
    read = bvh.read_bvh(path)
    assert abs(read["fps"] - 30) < 1e-6
    assert np.abs(by_name(read) / 100.0 - joints).max() <= 1e-5


def test_bvh_text_layout(tmp_path, clip):
    path, _ = bvh.export_bvh(tmp_path / "a.bvh", clip[:5], clean_feet=False)
    text = path.read_text().splitlines()
    assert text[0] == "HIERARCHY" and text[1] == "ROOT pelvis"
    assert "MOTION" in text and "Frames: 5" in text and "Frame Time: 0.0500000000" in text
    assert sum(1 for ln in text if ln.strip() == "End Site") == 5  # toes, head, wrists
    assert len(text[-1].split()) == 6 + 21 * 3


def test_foot_lock_removes_skating_and_keeps_the_root(clip):
    # make the feet slide: a 2 Hz, 6 cm sway of the lower legs while the body is unchanged
    t = np.arange(len(clip)) / 20.0
    sway = 0.06 * np.stack([np.sin(2 * np.pi * 2 * t), 0 * t, np.cos(2 * np.pi * 2 * t)], -1)
    skating = clip.copy()
    for j in (7, 8, 10, 11):
        skating[:, j] += sway
    for j in (4, 5):
        skating[:, j] += 0.5 * sway
    before = metrics.skating_ratio(skating)
    cleaned = footlock.foot_lock(skating)
    after = metrics.skating_ratio(cleaned)
    assert before > 0.2
    assert after <= metrics.skating_ratio(clip) + 0.02
    np.testing.assert_array_equal(cleaned[:, 0], skating[:, 0])        # root path untouched
    upper = [j for j in range(22) if j not in (4, 5, 7, 8, 10, 11)]
    np.testing.assert_array_equal(cleaned[:, upper], skating[:, upper])
    # the legs keep the bone lengths they had
    for a, b in ((1, 4), (4, 7), (2, 5), (5, 8), (7, 10), (8, 11)):
        np.testing.assert_allclose(np.linalg.norm(cleaned[:, b] - cleaned[:, a], axis=-1),
                                   np.linalg.norm(skating[:, b] - skating[:, a], axis=-1), atol=1e-9)


def test_foot_lock_leaves_clean_motion_nearly_unchanged(clip):
    cleaned = footlock.foot_lock(clip)
    assert np.abs(cleaned - clip).max() < 0.02
    assert metrics.skating_ratio(cleaned) <= metrics.skating_ratio(clip) + 1e-9


def test_export_with_foot_lock_encodes_what_it_returns(tmp_path, clip):
    path, encoded = bvh.export_bvh(tmp_path / "b.bvh", clip)
    assert np.abs(by_name(bvh.read_bvh(path)) - encoded).max() <= 1e-3


def test_bad_inputs(tmp_path, clip):
    with pytest.raises(bvh.BVHError, match=r"\(frames, 22, 3\)"):
        bvh.export_bvh(tmp_path / "x.bvh", clip[:, :21])
    with pytest.raises(bvh.BVHError, match="units"):
        bvh.export_bvh(tmp_path / "x.bvh", clip[:3], units="inch")
    assert not list(tmp_path.iterdir())  # nothing half-written
    bad = tmp_path / "bad.bvh"
    bad.write_text("HIERARCHY\nROOT pelvis\n{\nOFFSET 0 0 0\nCHANNELS 3 Xrotation Yrotation Zrotation\n}\n"
                   "MOTION\nFrames: 2\nFrame Time: 0.05\n1 2 3\n")
    with pytest.raises(bvh.BVHError, match="3 motion values, expected 2 frames x 3 channels"):
        bvh.read_bvh(bad)
