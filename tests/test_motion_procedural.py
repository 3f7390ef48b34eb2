"""Procedural corpus: rigid skeleton, planted feet, checkers true on ground truth, folder readable."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from polydiff.motion import captions as cap
from polydiff.motion import corpus, metrics, procedural
from polydiff.motion import skeleton as sk
from polydiff.motion.dataset import MotionTextDataset
from polydiff.motion.features import canonicalize


@pytest.fixture(scope="module")
def every_action():
    rng = np.random.default_rng(7)
    out = {}
    for name in procedural.ACTIONS:
        joints, labels = procedural.perform([name], rng)
        out[name] = (canonicalize(joints).numpy(), labels)
    return out


def test_every_action_is_a_rigid_motion_on_the_floor(every_action):
    for name, (j, _) in every_action.items():
        lengths = np.linalg.norm(j[:, 1:] - j[:, list(sk.PARENTS[1:])], axis=-1)
        np.testing.assert_allclose(
            lengths, np.broadcast_to(sk.BONE_LENGTHS[1:], lengths.shape), atol=1e-9, err_msg=name
        )
        assert abs(j[..., 1].min()) < 1e-9, name  # canonical floor is the toe base on the ground
        assert np.all(np.isfinite(j))


def test_ground_truth_does_not_skate(every_action):
    for name, (j, _) in every_action.items():
        assert metrics.skating_ratio(j) <= 0.01, name
        assert metrics.ground_penetration(j) < 1e-9, name


def test_planted_toes_do_not_move_at_all(every_action):
    # a toe base on the floor (y < 1 mm) stays exactly where it is until it lifts
    for name, (j, _) in every_action.items():
        toes = j[:, list(sk.TOES)]
        on = (toes[1:, :, 1] < 1e-3) & (toes[:-1, :, 1] < 1e-3)
        slide = np.linalg.norm(toes[1:, :, [0, 2]] - toes[:-1, :, [0, 2]], axis=-1)
        assert slide[on].max(initial=0.0) < 1e-6, name


def test_checkers_pass_on_ground_truth_and_mostly_fail_on_other_motions(every_action):
    names = list(every_action)
    for name in names:
        j, labels = every_action[name]
        assert all(metrics.check(lb, j) for lb in labels), (name, labels)
    table = metrics.summary([(labels, j) for j, labels in every_action.values()])
    assert table["attribute_accuracy"] == 1.0 and table["skating_ratio"] <= 0.01
    # the same labels on a different action's motion: the checker should say no
    wrong = [
        metrics.check(every_action[a][1][0], every_action[b][0])
        for a in names
        for b in names
        if a != b and not {a, b} <= {"turn", "spin"}
    ]
    assert np.mean(wrong) < 0.1


def test_checkers_distinguish_left_and_right():
    rng = np.random.default_rng(0)
    for action, key, sides in (
        ("wave", "hand", ("left", "right")),
        ("kick", "foot", ("left", "right")),
        ("turn", "direction", ("left", "right")),
        ("side_step", "direction", ("left", "right")),
    ):
        for side in sides:
            j, labels = procedural.perform([(action, {key: side})], rng)
            lb = labels[0]
            other = dict(lb, **{key: "left" if side == "right" else "right"})
            assert metrics.check(lb, j) and not metrics.check(other, j), (action, side)


def test_turn_angle_and_sequence_spans():
    rng = np.random.default_rng(1)
    j, labels = procedural.perform(
        [("walk", {"speed": 1.0, "duration": 3.0}), ("turn", {"angle": 90, "direction": "left"}), "wave"], rng
    )
    assert [lb["action"] for lb in labels] == ["walk", "turn", "wave"]
    assert labels[0]["start"] == 0 and labels[1]["start"] == labels[0]["end"] and labels[-1]["end"] == len(j)
    yaw = metrics.facing_yaw(j)
    turned = np.rad2deg(yaw[labels[1]["end"] - 1] - yaw[labels[1]["start"]])
    assert abs(turned - 90) < 2
    # actions hand over in the neutral stance: at each boundary every joint is nearly at rest
    step = np.linalg.norm(np.diff(j, axis=0), axis=-1).max(axis=1)  # (T-1,) fastest joint per frame
    for lb in labels[1:]:
        assert step[lb["start"] - 2 : lb["start"]].max() < 0.03  # the two frame pairs up to the handover
    assert step.max() < 0.35  # a walking swing foot peaks near 5 m/s


def test_sit_down_then_only_stand_up():
    rng = np.random.default_rng(2)
    with pytest.raises(ValueError, match="stand_up"):
        procedural.perform(["sit_down", "wave"], rng)
    j, labels = procedural.perform(["sit_down", "stand_up"], rng)
    assert all(metrics.check(lb, j) for lb in labels)


def test_captions_use_heldout_templates_only_when_asked():
    rng = np.random.default_rng(3)
    label = {"action": "walk", "speed": 0.7, "direction": "forward"}
    train = {cap.phrase(label, rng, "train") for _ in range(200)}
    held = {cap.phrase(label, rng, "heldout") for _ in range(200)}
    assert not any(p.startswith(("strolls", "paces")) for p in train)
    assert all(p.startswith(("strolls", "paces")) for p in held)
    assert "strolls ahead at a leisurely pace" in held
    assert any("slowly" in p or "leisurely" in p or "slow pace" in p for p in train)


def test_build_data_folder_is_deterministic_and_readable(tmp_path):
    result = CliRunner().invoke(
        __import__("polydiff.motion.plugin", fromlist=["cli"]).cli,
        ["build-data", "-o", str(tmp_path / "a"), "--clips", "6", "--seed", "5"],
    )
    assert result.exit_code == 0, result.output
    corpus.build_data(tmp_path / "b", clips=6, seed=5)
    a, b = tmp_path / "a", tmp_path / "b"
    for name in ("000000", "000005"):
        np.testing.assert_array_equal(
            np.load(a / "new_joint_vecs" / f"{name}.npy"), np.load(b / "new_joint_vecs" / f"{name}.npy")
        )
        assert (a / "texts" / f"{name}.txt").read_text() == (b / "texts" / f"{name}.txt").read_text()
    splits = {s: (a / f"{s}.txt").read_text().split() for s in ("train", "val", "test")}
    assert sorted(sum(splits.values(), [])) == [f"{i:06d}" for i in range(6)]
    assert splits["test"] and splits["val"]
    for name in sum(splits.values(), []):
        feats, joints, meta = corpus.load_clip(a, name)
        assert feats.shape == (meta["frames"], 263) and joints.shape == (meta["frames"], 22, 3)
        assert all(metrics.check(lb, joints) for lb in meta["actions"]), meta["actions"]
        lines = (a / "texts" / f"{name}.txt").read_text().splitlines()
        assert len(lines) == 3 and all(ln.count("#") == 3 for ln in lines)
        assert (meta["caption_templates"][0] == "heldout") == (name in splits["test"])
    d = MotionTextDataset(a, "train")
    x, n, caption = d[0]
    assert x.shape == (n, 263) and caption
    info = json.loads((a / "corpus.json").read_text())
    assert info["clips"] == 6 and info["seed"] == 5


def test_build_data_refuses_to_overwrite_and_leaves_nothing_half_written(tmp_path):
    corpus.build_data(tmp_path / "c", clips=1, seed=0)
    with pytest.raises(corpus.CorpusError, match="--overwrite"):
        corpus.build_data(tmp_path / "c", clips=1, seed=0)
    with pytest.raises(corpus.CorpusError, match="at least 1"):
        corpus.build_data(tmp_path / "d", clips=0)
    assert not (tmp_path / "d").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_curved_and_circular_walks():
    rng = np.random.default_rng(6)
    for curve in (120.0, -90.0, 360.0):
        j, labels = procedural.perform([("walk", {"curve": curve, "duration": 4.5, "speed": 1.0})], rng)
        lb = labels[0]
        assert lb["curve"] == curve and metrics.check(lb, j)
        assert not metrics.check(dict(lb, curve=-curve), j)
        straight = {k: v for k, v in lb.items() if k != "curve"}
        assert not metrics.check(straight, j)  # a curved path is not "walks forward"
        assert metrics.skating_ratio(j) <= 0.01
        assert "circle" in cap.phrase(lb, rng) or "loop" in cap.phrase(lb, rng) or abs(curve) < 300
    with pytest.raises(ValueError, match="curves are for"):
        procedural.perform([("side_step", {"curve": 90.0})], rng)


def test_check_sequence_tolerates_shifted_timing():
    rng = np.random.default_rng(8)
    j, labels = procedural.perform(["walk", ("wave", {"hand": "right"}), "squat"], rng)
    assert metrics.check_sequence(labels, j) == [True, True, True]
    # the same actions, each starting 15 frames later than the spans say
    late = np.concatenate([np.repeat(j[:1], 15, 0), j])
    assert not all(metrics.check(lb, late) for lb in labels)
    assert metrics.check_sequence(labels, late) == [True, True, True]
    # the wrong order is not rescued by moving boundaries
    swapped = [
        dict(labels[1], start=0),
        dict(labels[0], start=labels[1]["end"] - labels[1]["start"]),
        labels[2],
    ]
    assert not all(metrics.check_sequence(swapped, j))
