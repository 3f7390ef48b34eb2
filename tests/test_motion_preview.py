"""GIF preview: frame count and timing read back with Pillow; the figure moves where the joints move."""

import numpy as np
import pytest
from polydiff.motion import preview, procedural
from polydiff.motion.features import canonicalize


def test_gif_frames_and_duration(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    joints, _ = procedural.perform([("raise_arms", {"duration": 1.5})], rng)
    joints = canonicalize(joints).numpy()[::3]
    path = preview.write_gif(tmp_path / "p.gif", joints, fps=20, size=160)
    with Image.open(path) as im:
        assert im.n_frames == len(joints)
        assert im.info["duration"] == 50
    frames = preview.render_frames(joints[[0, len(joints) // 2]], size=160)
    # something is drawn, and arms up (middle) vs down (start) give different pictures
    assert (frames[0] < 200).any(axis=-1).sum() > 100
    assert np.abs(frames[0].astype(int) - frames[1].astype(int)).sum() > 0


def test_preview_bad_inputs(tmp_path):
    with pytest.raises(preview.PreviewError, match=".gif"):
        preview.write_gif(tmp_path / "p.mp4", np.zeros((2, 22, 3)))
    with pytest.raises(preview.PreviewError, match=r"\(frames, 22, 3\)"):
        preview.write_gif(tmp_path / "p.gif", np.zeros((2, 21, 3)))
    assert not list(tmp_path.iterdir())
