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
    assert read["channels"][0] == [
        "Xposition",
        "Yposition",
        "Zposition",
        "Zrotation",
        "Xrotation",
        "Yrotation",
    ]
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
    np.testing.assert_array_equal(cleaned[:, 0], skating[:, 0])  # root path untouched
    upper = [j for j in range(22) if j not in (4, 5, 7, 8, 10, 11)]
    np.testing.assert_array_equal(cleaned[:, upper], skating[:, upper])
    # the legs keep the bone lengths they had
    for a, b in ((1, 4), (4, 7), (2, 5), (5, 8), (7, 10), (8, 11)):
        np.testing.assert_allclose(
            np.linalg.norm(cleaned[:, b] - cleaned[:, a], axis=-1),
            np.linalg.norm(skating[:, b] - skating[:, a], axis=-1),
            atol=1e-9,
        )


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
    bad.write_text(
        "HIERARCHY\nROOT pelvis\n{\nOFFSET 0 0 0\nCHANNELS 3 Xrotation Yrotation Zrotation\n}\n"
        "MOTION\nFrames: 2\nFrame Time: 0.05\n1 2 3\n"
    )
    with pytest.raises(bvh.BVHError, match="3 motion values, expected 2 frames x 3 channels"):
        bvh.read_bvh(bad)
    bad.write_text(bad.read_text().replace("Frames: 2", "Frames: two"))
    with pytest.raises(bvh.BVHError, match="malformed number"):
        bvh.read_bvh(bad)
    bad.write_bytes(b"HIERARCHY\xff")
    with pytest.raises(bvh.BVHError, match="cannot read BVH file"):
        bvh.read_bvh(bad)


# -- save_motion / load_motion / `polydiff motion convert` ----------------------------------------
def test_save_and_load_every_format(tmp_path, clip):
    from polydiff.motion import export

    short = clip[:12]
    for name in ("m.bvh", "m.npz", "m.glb", "m.gltf", "m.gif"):
        path = export.save_motion(tmp_path / name, short, fps=20, clean_feet=False)
        assert path.exists() and path.stat().st_size > 0
    joints, fps = export.load_motion(tmp_path / "m.bvh")
    assert fps == pytest.approx(20) and np.abs(joints - short).max() < 1e-3
    joints, fps = export.load_motion(tmp_path / "m.npz")
    assert np.abs(joints - short).max() < 1e-6
    with np.load(tmp_path / "m.npz") as z:
        assert z["features"].shape == (11, 263)
        np.save(tmp_path / "f.npy", z["features"])
    joints, _ = export.load_motion(tmp_path / "f.npy")  # features -> joints (canonical frame)
    assert np.abs(joints - short[:-1]).max() < 1e-4


def test_save_motion_bad_inputs_leave_nothing(tmp_path, clip):
    from polydiff.motion import export

    with pytest.raises(export.MotionFileError, match="unknown output extension '.fbx'"):
        export.save_motion(tmp_path / "m.fbx", clip)
    with pytest.raises(export.MotionFileError, match="fps must be positive"):
        export.save_motion(tmp_path / "m.bvh", clip, fps=0)
    with pytest.raises(export.MotionFileError, match="NaN"):
        export.save_motion(tmp_path / "m.npz", np.full((3, 22, 3), np.nan))
    if export.find_ffmpeg() is None:
        with pytest.raises(export.MotionFileError, match="ffmpeg"):
            export.save_motion(tmp_path / "m.mp4", clip[:3])
    assert not list(tmp_path.iterdir())
    with pytest.raises(export.MotionFileError, match="does not exist"):
        export.load_motion(tmp_path / "nope.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(export.MotionFileError, match="cannot read motion file"):
        export.load_motion(tmp_path / "junk.npz")
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(export.MotionFileError, match="use .npz, .npy"):
        export.load_motion(tmp_path / "m.txt")


def test_convert_cli(tmp_path, clip):
    from click.testing import CliRunner
    from polydiff.motion.plugin import cli

    np.save(tmp_path / "j.npy", clip[:10])
    r = CliRunner().invoke(cli, ["convert", str(tmp_path / "j.npy"), "-o", str(tmp_path / "j.bvh")])
    assert r.exit_code == 0, r.output
    assert bvh.read_bvh(tmp_path / "j.bvh")["positions"].shape == (10, 22, 3)
    r = CliRunner().invoke(cli, ["convert", str(tmp_path / "j.npy"), "-o", str(tmp_path / "j.xyz")])
    assert r.exit_code != 0 and "unknown output extension" in r.output
