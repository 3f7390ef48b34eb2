"""The Janus check (threed.janus) on fields whose true shape is known by construction."""

from __future__ import annotations

import math

import pytest
import torch
from polydiff.threed.field import RadianceField
from polydiff.threed.janus import (
    SDFField,
    compare_silhouettes,
    janus_score,
    normalise_silhouettes,
    silhouette_moments,
    soft_iou,
)
from polydiff.threed.primitives import sdf_torus, single

RES = 24            # tiny renders: shape differences here are gross, not pixel-level
KW = {"resolution": RES, "n_samples": 48}


def disc(res, cx, cy, r):
    """A binary disc (1, res, res) of radius r pixels centred at (cx, cy) in pixel coordinates."""
    c = torch.arange(res, dtype=torch.float32) + 0.5
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return (((xx - cx) ** 2 + (yy - cy) ** 2) <= r * r).float()[None]


def test_moments_of_a_disc_and_normalisation_removes_position_and_size():
    a = disc(64, 20.0, 30.0, 8.0)
    centre, rms, mass = silhouette_moments(a)
    # a disc of radius r: r.m.s. radius r / sqrt(2), area pi r^2 (pixelised: within ~5 %)
    assert torch.allclose(centre, torch.tensor([[20.0, 30.0]]), atol=0.05)
    assert abs(rms.item() - 8.0 / math.sqrt(2)) < 0.1
    assert abs(mass.item() - math.pi * 64) / (math.pi * 64) < 0.05
    b = disc(64, 40.0, 25.0, 14.0)                               # moved and scaled: the same shape
    assert soft_iou(a, b).item() < 0.3
    assert compare_silhouettes(a, b).item() > 0.93
    square = torch.zeros(1, 64, 64)
    square[:, 20:44, 20:44] = 1.0
    # circle vs square of equal r.m.s. radius: IoU 0.824 in closed form (four circular segments cut off)
    assert abs(compare_silhouettes(a, square).item() - 0.824) < 0.03
    assert normalise_silhouettes(torch.zeros(1, 64, 64), 32).abs().sum() == 0


@pytest.mark.parametrize("shape", ["cone", "torus"])
def test_the_true_shape_passes(shape):
    scene = single(shape, "red")
    # the exact shape, moved and shrunk: the check is blind to position and size, as SDS leaves them free
    off, s = torch.tensor([0.1, -0.05, 0.1]), 0.8
    field = SDFField(lambda x: scene.sdf((x - off) / s) * s)
    out = janus_score(field, scene, **KW)
    assert out["passed"] and out["front_back_ok"] and not out["failed_views"]
    assert out["min_iou"] > 0.85


def test_two_copies_back_to_back_fail_from_the_sides():
    """A second cone behind the first: front and back still look like one cone, the sides do not."""
    scene = single("cone", "red")
    off, s = torch.tensor([0.0, 0.0, 0.3]), 0.7
    two = SDFField(lambda x: torch.minimum(scene.sdf((x - off) / s), scene.sdf((x + off) / s)) * s)
    out = janus_score(two, scene, **KW)
    assert not out["passed"]
    assert set(out["failed_views"]) == {"side +90", "side -90"}
    assert out["front_back_ok"]


def test_front_and_back_of_different_shapes_fail():
    """A cone in front (z > 0) and a torus behind. A silhouette is a projection, so the torus shows
    from the front too, but in perspective from above the near half dominates: the back view,
    where the torus is near, no longer looks like a cone."""
    scene = single("cone", "red")
    out = janus_score(SDFField(lambda x: torch.where(x[:, 2] > 0, scene.sdf(x), sdf_torus(x))), scene, **KW)
    assert not out["passed"]
    assert not out["front_back_ok"]
    assert "back" in out["failed_views"]
    assert out["iou"]["back"] < out["iou"]["front"]


def test_an_empty_field_fails_every_view():
    scene = single("sphere", "blue")
    out = janus_score(SDFField(lambda x: torch.ones(len(x))), scene, **KW)
    assert out["iou"] == {name: 0.0 for name in out["iou"]}
    assert not out["passed"] and not out["front_back_ok"]
    with pytest.raises(ValueError, match="threshold"):
        janus_score(SDFField(lambda x: torch.ones(len(x))), scene, threshold=1.5, **KW)


def test_a_radiance_field_is_checked_too():
    """The untrained RadianceField (threed.field) is a hazy ball around the origin: not a cone."""
    torch.manual_seed(0)
    out = janus_score(RadianceField(resolutions=(8,), hidden=8), single("cone", "red"), **KW)
    assert all(0.0 < v < 0.75 for v in out["iou"].values())
    assert not out["passed"]
