"""Text-to-motion model and pipelines, end to end on a tiny model trained for a few steps (CPU).

Facts checked: the training recipe runs through the core trainer and its shipped folder rebuilds the same
denoiser (config + Mean/Std + fps); generate writes every output format, loadable back with the asked
length; CFG scale 1 is the conditional denoiser and scale w is u + w (c - u); in-betweening and body-part
regeneration keep the known frames / channels bit for bit and change the rest; long chaining has the
summed length, windows no longer than the model's, and each window starts on the previous one's tail;
bad requests raise one clear error and leave no file behind.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from polydiff.core.checkpoint import load_pretrained
from polydiff.motion import features as ft
from polydiff.motion import pipeline as pl
from polydiff.motion.corpus import build_data
from polydiff.motion.export import find_ffmpeg, load_motion
from polydiff.motion.model import MotionDenoiser
from polydiff.motion.train import ship, train

TINY = ["model.dim=32", "model.depth=1", "model.heads=2", "model.patch_size=2", "train.steps=3",
        "train.batch_size=4", "train.warmup_steps=1", "train.checkpoint_every=3", "train.log_every=1",
        "train.device=cpu"]
FAST = {"steps": 3, "cfg": 2.0}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("motion")
    corpus = build_data(root / "corpus", clips=6, seed=3)
    run = root / "run"
    result = train(None, [f"data.root={corpus}", f"train.out_dir={run}", *TINY])
    assert result.step == 3
    ckpt = ship(run, root / "ckpt")
    return {"root": root, "corpus": corpus, "ckpt": ckpt, "model": pl.load_model(ckpt)}


def test_checkpoint_records_everything(tiny):
    meta = json.loads((tiny["ckpt"] / "config.json").read_text())
    cfg = meta["config"]
    assert cfg["fps"] == 20.0 and cfg["sigma_data"] == 1.0 and cfg["dim"] == 32 and cfg["n_feats"] == 263
    model = load_pretrained(tiny["ckpt"], cls=MotionDenoiser)
    assert np.array_equal(model.mean.numpy(), np.load(tiny["corpus"] / "Mean.npy"))
    assert np.array_equal(model.std.numpy(), np.load(tiny["corpus"] / "Std.npy"))
    # the shipped weights are the run's EMA weights
    ema = load_pretrained(max((tiny["root"] / "run" / "checkpoints").iterdir()), use_ema=True)
    for (k, a), b in zip(model.state_dict().items(), ema.state_dict().values()):
        assert torch.equal(a, b), k


def test_generate_every_extension(tiny, tmp_path):
    motion = pl.generate("a person walks forward then waves", seconds=2.0, num_samples=2, seed=1,
                         checkpoint=tiny["ckpt"], **FAST)
    assert motion.joints.shape == (2, 40, 22, 3) and motion.features.shape == (2, 40, 263)
    assert np.isfinite(motion.joints).all()
    for ext in (".bvh", ".glb", ".gltf", ".npz", ".gif"):
        paths = motion.save(tmp_path / f"walk{ext}")
        assert [p.name for p in paths] == [f"walk_0{ext}", f"walk_1{ext}"]
        assert all(p.stat().st_size > 0 for p in paths)
    joints, fps = load_motion(motion.save(tmp_path / "raw.npz", foot_lock=False)[1])
    assert fps == 20.0 and np.allclose(joints, motion.joints[1], atol=1e-6)
    locked, _ = load_motion(tmp_path / "walk_1.npz")          # foot-lock on by default: the root path is kept
    assert np.allclose(locked[:, 0], motion.joints[1][:, 0], atol=1e-6)
    back, _ = load_motion(tmp_path / "walk_0.bvh")
    assert back.shape == (40, 22, 3)
    # --fps resamples in time: same duration, frames at the new rate
    one = pl.generate("a person jumps", seconds=2.0, fps=30, checkpoint=tiny["ckpt"], **FAST)
    joints, fps = load_motion(one.save(tmp_path / "jump.npz")[0])
    assert fps == 30.0 and joints.shape[0] == 60
    if find_ffmpeg():
        import imageio_ffmpeg
        frames, secs = imageio_ffmpeg.count_frames_and_secs(str(one.save(tmp_path / "jump.mp4")[0]))
        assert frames == 60 and abs(secs - 2.0) < 0.05   # 2 s at 30 fps, read back by ffmpeg
    else:   # refused up front with the fix, nothing written
        with pytest.raises(pl.MotionError, match="needs ffmpeg"):
            one.save(tmp_path / "jump.mp4")
        assert not list(tmp_path.glob("*.mp4*")) and not list(tmp_path.glob(".jump*"))
    # sample i has its own noise stream: drawn alone it is the same motion (up to batched-matmul rounding)
    again = pl.generate("a person walks forward then waves", seconds=2.0, num_samples=1, seed=1,
                        checkpoint=tiny["ckpt"], **FAST)
    assert np.allclose(again.features[0], motion.features[0], atol=1e-4)


def test_cfg_scale_one_is_the_conditional_model(tiny):
    model = tiny["model"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 263, 12, generator=g) * 3
    sigma = torch.tensor([3.0, 0.4])
    prompts = ["a person kicks", "someone bows"]
    cond = pl.text_encoder(model)(prompts)
    c = model(x, sigma, **model.condition_kwargs(cond))
    u = model(x, sigma)
    assert not torch.allclose(c, u)
    assert torch.equal(pl.guided_denoiser(model, prompts, 1.0)(x, sigma), c)
    assert torch.allclose(pl.guided_denoiser(model, prompts, 3.0)(x, sigma), u + 3.0 * (c - u), atol=1e-5)
    assert torch.allclose(pl.guided_denoiser(model, prompts, 0.0)(x, sigma), u, atol=1e-5)


def test_inbetween_keeps_known_frames_exactly(tiny):
    src = pl.generate("a person walks forward", seconds=3.0, checkpoint=tiny["ckpt"], seed=5, **FAST).features[0]
    out = pl.inbetween("a person jumps", prefix=src[:8], suffix=src[-6:], seconds=2.5, checkpoint=tiny["ckpt"],
                       **FAST).features[0]
    assert out.shape == (50, 263)
    assert np.array_equal(out[:8], src[:8]) and np.array_equal(out[-6:], src[-6:])
    assert not np.allclose(out[8:-6], 0)
    keys = [0, 17, 40, 59]
    kf = pl.inbetween("a person squats", keyframes=src, keyframe_frames=keys, checkpoint=tiny["ckpt"], **FAST)
    got = kf.features[0]
    assert got.shape == src.shape and np.array_equal(got[keys], src[keys])
    free = np.setdiff1d(np.arange(len(src)), keys)
    assert not np.array_equal(got[free], src[free])


def test_part_channels_partition_the_features():
    upper, lower = pl.part_channels("upper"), pl.part_channels("lower")
    assert not (upper & lower).any() and (upper | lower).all()
    arms = pl.part_channels("arms")
    assert np.array_equal(arms, pl.part_channels("left_arm") | pl.part_channels("right_arm")) and not (arms & lower).any()
    with pytest.raises(pl.MotionError, match="unknown body part"):
        pl.part_channels("tail")


def test_body_part_regeneration_keeps_the_rest_exactly(tiny, tmp_path):
    src_motion = pl.generate("a person walks forward", seconds=2.0, checkpoint=tiny["ckpt"], seed=2, **FAST)
    src_file = src_motion.save(tmp_path / "src.npz", foot_lock=False)[0]   # keeps the features as drawn
    src = src_motion.features[0]
    out = pl.regenerate("a person waves the right hand", src_file, part="upper", checkpoint=tiny["ckpt"],
                        seed=9, **FAST).features[0]
    keep = ~pl.part_channels("upper")
    assert np.array_equal(out[:, keep], src[:, keep])
    assert not np.array_equal(out[:, ~keep], src[:, ~keep])
    # the legs (and the root path) recovered from the edit are the source's legs
    legs = [1, 2, 4, 5, 7, 8, 10, 11]
    assert np.allclose(ft.features_to_joints(out)[:, legs].numpy(), src_motion.joints[0][:, legs], atol=1e-5)


def test_long_sequence_chains_windows(tiny, monkeypatch):
    windows = []
    real = pl.sample_window

    def spy(model, prompts, frames, gens, opts, known=None, mask=None):
        x = real(model, prompts, frames, gens, opts, known, mask)
        windows.append((frames, known, mask, x))
        return x

    monkeypatch.setattr(pl, "sample_window", spy)
    segs = [("a person walks forward", 31.0), ("someone jogs in a circle", 20.0), ("a person sits down", 11.05)]
    out = pl.generate_long(segs, transition=1.0, checkpoint=tiny["ckpt"], steps=2, cfg=1.0)
    assert out.features.shape == (1, 620 + 400 + 221, 263) and out.seconds > 60
    assert max(w[0] for w in windows) <= pl.MAX_FRAMES
    for (_, _, _, prev), (_, known, mask, x) in itertools.pairwise(windows):
        k = int(mask.sum())
        assert k == 20 and torch.equal(x[..., :k], prev[..., -k:])     # each window starts on the last tail
    # the output is the windows' new frames in order
    new = torch.cat([windows[0][3]] + [w[3][..., 20:] for w in windows[1:]], dim=-1)
    assert torch.allclose(torch.from_numpy(out.features[0]), tiny["model"].denormalize(new[0].T), atol=1e-5)


def test_bad_inputs_clear_errors_and_no_files(tiny, tmp_path):
    ck = tiny["ckpt"]
    with pytest.raises(pl.MotionError, match="prompt is empty"):
        pl.generate("  ", checkpoint=ck)
    for bad in (0, -2.0, float("nan")):
        with pytest.raises(pl.MotionError, match="positive number of seconds"):
            pl.generate("a person walks", seconds=bad, checkpoint=ck)
    with pytest.raises(pl.MotionError, match="unknown output extension"):
        pl.generate("a person walks", seconds=1.0, checkpoint=ck, **FAST).save(tmp_path / "x.fbx")
    broken = tmp_path / "keys.npz"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(pl.MotionError, match="cannot read motion file"):
        pl.inbetween("a person jumps", keyframes=broken, keyframe_frames=[0], checkpoint=ck)
    with pytest.raises(pl.MotionError, match="does not exist"):
        pl.inbetween("a person jumps", prefix=tmp_path / "missing.bvh", seconds=2, checkpoint=ck)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.npz"]

    runner = CliRunner()
    from polydiff.motion.plugin import cli

    out = tmp_path / "cli"
    out.mkdir()
    cases = [
        ["generate", "", "-o", str(out / "a.bvh"), "--checkpoint", str(ck)],
        ["generate", "a person walks", "--seconds", "0", "-o", str(out / "a.bvh"), "--checkpoint", str(ck)],
        ["generate", "a person walks", "-o", str(out / "a.txt"), "--checkpoint", str(ck)],
        ["inbetween", "a person jumps", "--keyframes", str(broken), "--frames", "0,4", "-o", str(out / "a.bvh"),
         "--checkpoint", str(ck)],
    ]
    for args in cases:
        res = runner.invoke(cli, args)
        assert res.exit_code == 2 and "Error:" in res.output and "Traceback" not in res.output, res.output
    assert list(out.iterdir()) == []
    res = runner.invoke(cli, ["generate", "a person walks", "--seconds", "1", "--steps", "2", "-o",
                              str(out / "w.npz"), "--checkpoint", str(ck), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert [p.name for p in out.iterdir()] == ["w.npz"]


def test_resample_is_exact_on_linear_motion():
    t = np.arange(41) / 20.0
    joints = np.broadcast_to((2.0 * t + 0.5)[None, :, None, None], (1, 41, 22, 3)).copy()
    out = pl.resample(joints, 20.0, 30.0)
    assert out.shape == (1, 62, 22, 3)
    assert np.allclose(out[0, :, 0, 0], 2.0 * np.minimum(np.arange(62) / 30.0, 2.0) + 0.5)


def test_generate_batch_lengths(tiny):
    ms = pl.generate_batch(["a person walks forward", "someone claps"], [1.0, 2.2], checkpoint=tiny["ckpt"], **FAST)
    assert [m.joints.shape[1] for m in ms] == [20, 44] and [m.prompts for m in ms] == [["a person walks forward"],
                                                                                        ["someone claps"]]
    assert all(np.isfinite(m.features).all() for m in ms)


def test_demo_artifacts(tiny, tmp_path, monkeypatch):
    from polydiff.motion import demo

    monkeypatch.setattr(demo, "SECONDS", 1.0)
    arts = demo.demo(tmp_path, device="cpu", checkpoint=tiny["ckpt"])
    assert sorted(a.kind for a in arts) == ["download"] * 2 + ["image"] * 2 + ["model"] * 2
    for a in arts:
        assert a.path.is_file() and a.path.stat().st_size > 0
        assert a.path.suffix == {"download": ".bvh", "image": ".gif", "model": ".glb"}[a.kind]
    assert all(a.poster.is_file() for a in arts if a.kind == "model")


def test_parameterisations():
    torch.manual_seed(0)
    x, sigma = torch.randn(2, 263, 8), torch.tensor([0.3, 5.0])
    for prediction in ("x0", "edm"):
        m = MotionDenoiser(dim=32, depth=1, heads=2, prediction=prediction)
        torch.nn.init.normal_(m.net.proj_out.weight, std=0.1)        # a non-zero net output
        F = m(x, sigma, net_output=True)
        c_in = (sigma**2 + 1).rsqrt()[:, None, None]
        assert torch.allclose(F, m.net(c_in * x, sigma.log() / 4, cond=m.null(2)), atol=1e-6)
        if prediction == "x0":      # the estimate is the network's output: no noisy input passes through
            expect = F
        else:                       # EDM, sigma_data = 1: c_skip = 1 / (s^2 + 1), c_out = s / sqrt(s^2 + 1)
            s = sigma[:, None, None]
            expect = x / (s**2 + 1) + s / (s**2 + 1).sqrt() * F
        assert torch.allclose(m(x, sigma), expect, atol=1e-6)
