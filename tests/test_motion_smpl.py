"""SMPL export through smplx, with a small synthetic model file in SMPL's layout built here."""

import numpy as np
import pytest

pytest.importorskip("smplx")

from polydiff.motion import procedural, smpl
from polydiff.motion import skeleton as sk
from polydiff.motion.features import canonicalize


def synthetic_smpl(folder, t_pose=False):
    """24 'vertices' at SMPL's 24 rest joints (our skeleton; optionally arms out in a T-pose), each
    vertex skinned rigidly to its joint's parent, J_regressor picking vertex j for joint j: the posed
    vertex j is then exactly the posed joint j."""
    offsets = np.zeros((24, 3))
    offsets[:22] = sk.OFFSETS
    if t_pose:
        for j, x in ((18, 1), (20, 1), (19, -1), (21, -1)):  # elbows and wrists out to the side
            offsets[j] = [x * np.linalg.norm(sk.OFFSETS[j]), 0.0, 0.0]
    parents = list(sk.PARENTS) + [20, 21]
    offsets[22], offsets[23] = [0.0, -0.08, 0.0], [0.0, -0.08, 0.0]
    rest = np.zeros((24, 3))
    for j in range(1, 24):
        rest[j] = rest[parents[j]] + offsets[j]
    rest += [0.0, 0.9, 0.0]  # SMPL's pelvis is not at the origin either
    weights = np.zeros((24, 24))
    weights[0, 0] = 1.0
    for j in range(1, 24):
        weights[j, parents[j]] = 1.0
    kintree = np.array([[4294967295] + parents[1:], list(range(24))], dtype=np.int64)
    np.savez(
        folder / "SMPL_NEUTRAL.npz",
        v_template=rest,
        shapedirs=np.zeros((24, 3, 10)),
        posedirs=np.zeros((24, 3, 207)),
        J_regressor=np.eye(24),
        weights=weights,
        kintree_table=kintree,
        f=np.array([[0, 1, 2], [0, 2, 3]], dtype=np.int64),
    )
    return rest


@pytest.fixture(scope="module")
def clip():
    rng = np.random.default_rng(4)
    joints, _ = procedural.perform(["wave", "squat"], rng)
    return canonicalize(joints).numpy()[::2]


@pytest.mark.parametrize("t_pose", [False, True])
def test_smpl_export_reproduces_the_joints(tmp_path, clip, t_pose):
    synthetic_smpl(tmp_path, t_pose)
    out = smpl.export_smpl(tmp_path / "motion.npz", clip, tmp_path, fps=20)
    with np.load(out) as z:
        assert z["poses"].shape == (len(clip), 72) and z["trans"].shape == (len(clip), 3)
        assert str(z["gender"]) == "neutral" and float(z["mocap_framerate"]) == 20.0
        np.testing.assert_array_equal(z["poses"][:, 66:], 0.0)  # hands at rest
        verts = z["vertices"]
    # same bone lengths, so the posed SMPL joints land on ours (float32 inside smplx)
    assert np.abs(verts[:, :22] - clip).max() < 1e-4


def test_missing_and_bad_model_files(tmp_path, clip):
    with pytest.raises(smpl.SMPLError, match="no SMPL model file"):
        smpl.export_smpl(tmp_path / "m.npz", clip, tmp_path)
    np.savez(tmp_path / "SMPL_NEUTRAL.npz", v_template=np.zeros((3, 3)))
    with pytest.raises(smpl.SMPLError, match="missing SMPL arrays"):
        smpl.export_smpl(tmp_path / "m.npz", clip, tmp_path)
    with pytest.raises(smpl.SMPLError, match="gender"):
        smpl.load_smpl(tmp_path, gender="robot")
    with pytest.raises(smpl.SMPLError, match=".npz"):
        smpl.export_smpl(tmp_path / "m.pkl", clip, tmp_path)
    assert not (tmp_path / "m.npz").exists()


def test_convert_cli_writes_smpl(tmp_path, clip):
    from click.testing import CliRunner
    from polydiff.motion.plugin import cli

    synthetic_smpl(tmp_path)
    np.save(tmp_path / "j.npy", clip)
    r = CliRunner().invoke(
        cli, ["convert", str(tmp_path / "j.npy"), "-o", str(tmp_path / "s.npz"), "--smpl", str(tmp_path)]
    )
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "s.npz") as z:
        assert z["poses"].shape == (len(clip), 72)
    r = CliRunner().invoke(
        cli,
        [
            "convert",
            str(tmp_path / "j.npy"),
            "-o",
            str(tmp_path / "t.npz"),
            "--smpl",
            str(tmp_path / "nowhere"),
        ],
    )
    assert r.exit_code != 0 and "no SMPL model file" in r.output
