"""The primitive world: shape volumes against formulas, distance bounds, renders, captions, data set."""

import json
import math

import numpy as np
import pytest
import torch
from polydiff.threed.cameras import make_cameras
from polydiff.threed.dataset import (
    build_data,
    caption,
    heldout_combos,
    parse_prompt,
    random_scene,
    train_combos,
)
from polydiff.threed.io import OutputError
from polydiff.threed.primitives import COLORS, PALETTE, SDF, SHAPES, compose, render_scene, single

VOLUMES = {  # closed forms for the default sizes in primitives.py
    "cube": 0.8 ** 3, "sphere": 4 / 3 * math.pi * 0.5 ** 3, "cylinder": math.pi * 0.4 ** 2 * 0.9,
    "cone": math.pi * 0.45 ** 2 * 0.9 / 3, "torus": 2 * math.pi ** 2 * 0.35 * 0.15 ** 2,
    "pyramid": 0.9 ** 2 * 0.9 / 3, "capsule": math.pi * 0.25 ** 2 * 0.5 + 4 / 3 * math.pi * 0.25 ** 3,
}


def test_shape_volumes_match_closed_forms():
    g = torch.Generator().manual_seed(0)
    n = 400_000
    p = torch.rand(n, 3, generator=g) * 1.4 - 0.7                         # box of volume 1.4^3
    for shape, vol in VOLUMES.items():
        frac = (SDF[shape](p) < 0).float().mean().item()
        est, se = frac * 1.4 ** 3, math.sqrt(frac * (1 - frac) / n) * 1.4 ** 3
        assert abs(est - vol) < 4.5 * se, (shape, est, vol)


def test_distance_functions_never_overstep():
    """Sphere tracing is safe when |sdf(p) - sdf(q)| <= |p - q|; exact ones also land on the surface."""
    g = torch.Generator().manual_seed(1)
    p, q = torch.randn(2, 20000, 3, generator=g) * 0.6
    for shape, f in SDF.items():
        assert ((f(p) - f(q)).abs() <= (p - q).norm(dim=-1) + 1e-5).all(), shape
        if shape == "pyramid":
            continue                                    # a lower bound outside, exact only inside
        x = p.clone().requires_grad_(True)
        d = f(x)
        (grad,) = torch.autograd.grad(d.sum(), x)
        on_surface = x.detach() - d.detach()[:, None] * grad
        assert f(on_surface).abs().max() < 2e-3, shape


def test_sphere_render_covers_the_projected_disc():
    cams = make_cameras(0.0, 0.0, 2.0, 40.0)
    out = render_scene(single("sphere", "blue"), cams, 64, shading="albedo")
    focal = 32 / math.tan(math.radians(20))
    radius_px = focal * math.tan(math.asin(0.5 / 2.0))
    assert abs(out["mask"].sum().item() / (math.pi * radius_px ** 2) - 1) < 0.03
    assert torch.allclose(out["rgb"][0, 32, 32], torch.tensor(PALETTE["blue"]), atol=1e-5)
    assert torch.allclose(out["rgb"][0, 0, 0], torch.ones(3))                        # white background
    assert abs(out["depth"][0, 32, 32].item() - 1.5) < 1e-2                           # 2 - r at the centre


def test_composition_on_top_is_touching_and_coloured_per_part():
    scene = compose(("cube", "red"), ("sphere", "blue"))
    top, bottom = scene.parts
    top_low = top.offset[1] - 0.4 * top.scale
    bottom_high = bottom.offset[1] + 0.5 * bottom.scale
    assert abs(top_low - bottom_high) < 1e-6
    p = torch.tensor([[0.0, top.offset[1], 0.0], [0.0, bottom.offset[1], 0.0]])
    assert torch.allclose(scene.color(p), torch.tensor([PALETTE["red"], PALETTE["blue"]]))
    assert scene.occupancy(p).all()


def test_captions_parse_back_to_their_scene():
    rng = np.random.default_rng(0)
    for i in range(300):
        scene = random_scene(rng, train_combos(), p_composition=0.5)
        text = caption(scene, [None, "front", "side", "back", "overhead"][i % 5], rng)
        parsed = parse_prompt(text)
        assert [(p.shape, p.color) for p in parsed.parts] == [(p.shape, p.color) for p in scene.parts], text
        assert parsed.relation == scene.relation, text
    assert [(p.shape, p.color) for p in parse_prompt("a crimson box").parts] == [("cube", "red")]
    with pytest.raises(ValueError, match="no shape"):
        parse_prompt("something nice")


def test_heldout_split_is_disjoint_and_covers_every_word():
    held, train = heldout_combos(), set(train_combos())
    assert held and not held & train and len(held | train) == len(SHAPES) * len(COLORS)
    assert {s for s, _ in train} == set(SHAPES) and {c for _, c in train} == set(COLORS)


def test_build_data_is_deterministic_and_has_no_heldout_pairs(tmp_path):
    a = build_data(tmp_path / "a", images=24, resolution=16, seed=3, shard_size=10, supersample=1)
    b = build_data(tmp_path / "b", images=24, resolution=16, seed=3, shard_size=16, supersample=1)
    load = lambda files: {k: np.concatenate([np.load(f)[k] for f in files if f.suffix == ".npz"])
                          for k in ("images", "captions", "shapes", "colors", "azimuth")}
    da, db = load(a), load(b)
    assert da["images"].shape == (24, 16, 16, 3) and da["images"].dtype == np.uint8
    for k in da:
        assert np.array_equal(da[k], db[k]), k                     # same data whatever the sharding
    held = heldout_combos()
    for s, c in zip(da["shapes"], da["colors"]):
        for si, ci in zip(s, c):
            if si >= 0:
                assert (SHAPES[si], COLORS[ci]) not in held
    manifest = json.loads((tmp_path / "a" / "train-manifest.json").read_text())
    assert manifest["images"] == 24 and len(manifest["shards"]) == 3
    assert not list((tmp_path / "a").glob("*.tmp"))


def test_build_data_bad_inputs_write_nothing(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        build_data(f, images=4, resolution=16)
    with pytest.raises(OutputError, match="writable"):
        build_data(f / "sub", images=4, resolution=16)           # a folder inside a file
    with pytest.raises(ValueError, match="positive"):
        build_data(tmp_path / "d", images=0)
    assert not (tmp_path / "d").exists() and f.read_text() == "x"


def test_build_data_command(tmp_path):
    from click.testing import CliRunner
    from polydiff.threed.plugin import cli

    res = CliRunner().invoke(cli, ["build-data", "-o", str(tmp_path / "d"), "--images", "6", "--resolution", "32"])
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "d" / "train-00000.npz")["images"].shape == (6, 32, 32, 3)
    res = CliRunner().invoke(cli, ["build-data", "-o", str(tmp_path / "d" / "train-00000.npz"), "--images", "2"])
    assert res.exit_code != 0 and "not a folder" in res.output
