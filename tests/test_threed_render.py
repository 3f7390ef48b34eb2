"""Cameras, the radiance field and the volume renderer against closed forms."""

import math

import pytest
import torch
from polydiff.threed.cameras import get_rays, make_cameras, sample_cameras, view_names, view_prompts
from polydiff.threed.field import Background, RadianceField, density_normals
from polydiff.threed.render import (
    OccupancyGrid,
    max_optical_depth_error,
    opacity_entropy,
    orientation_loss,
    render,
    render_rays,
    sample_lights,
)


class UniformSphere:
    """Density `k` inside a ball of radius `r`, zero outside; albedo a fixed colour."""

    def __init__(self, k=3.0, r=0.5, color=(0.8, 0.2, 0.1), bound=1.0):
        self.k, self.r, self.bound = k, r, bound
        self.color = torch.tensor(color)

    def __call__(self, x):
        return self.density(x), self.color.expand(len(x), 3)

    def density(self, x):
        return torch.where(x.norm(dim=-1) < self.r, torch.full_like(x[:, 0], self.k), torch.zeros_like(x[:, 0]))


class SmoothSphere(UniformSphere):
    """k * sigmoid((r - |x|) / s): a smooth ball whose density gradient points at the centre."""

    def density(self, x):
        return self.k * torch.sigmoid((self.r - x.norm(dim=-1)) / 0.05)


def test_look_at_is_orthonormal_and_centre_ray_hits_origin():
    cams = sample_cameras(16, elevation_range=(-80, 85), generator=torch.Generator().manual_seed(0))
    r = cams.rotation
    assert torch.allclose(r.transpose(1, 2) @ r, torch.eye(3).expand(16, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(r), torch.ones(16), atol=1e-5)           # right-handed
    # camera up has a non-negative world-Y component (+Y up), the view axis points at the origin
    assert (r[:, 1, 1] >= -1e-6).all()
    _, d = get_rays(cams, 9, 9)                                                      # odd: a centre pixel
    centre = d[:, 4, 4]
    to_origin = torch.nn.functional.normalize(-cams.position, dim=-1)
    assert torch.allclose(centre, to_origin, atol=1e-5)
    # the top image row looks further up than the bottom row
    assert ((d[:, 0, 4] - d[:, 8, 4]) * r[:, :, 1]).sum(-1).min() > 0


def test_fov_edge_ray_angle_and_straight_overhead():
    cams = make_cameras(elevation=90.0, azimuth=0.0, distance=2.0, fov=60.0)
    assert torch.allclose(cams.rotation[0].T @ cams.rotation[0], torch.eye(3), atol=1e-5)
    _, d = get_rays(make_cameras(0.0, 0.0, 2.0, 60.0), 2, 2)
    # pixel centres at +-0.5 px of a 2 px image: vertical angle atan(0.5 * tan(30 deg))
    ang = math.degrees(math.atan(0.5 * math.tan(math.radians(30.0))))
    y_angle = math.degrees(math.atan2(d[0, 0, 0, 1].item(), -d[0, 0, 0, 2].item()))
    assert abs(y_angle - ang) < 1e-3


def test_view_words():
    assert view_names([0, 0, 0, 0, 0, 70], [0, 30, 90, -90, 180, 180]) == \
        ["front", "front", "side", "side", "back", "overhead"]
    cams = make_cameras([0.0, 0.0], [0.0, 170.0], 2.0, 50.0)
    assert view_prompts("a red cube", cams) == ["a red cube, front view", "a red cube, back view"]


def test_uniform_sphere_opacity_matches_chord_length():
    field = UniformSphere(k=3.0, r=0.5)
    # rays parallel to z at offsets b from the axis: chord 2 sqrt(r^2 - b^2)
    b = torch.linspace(0.0, 0.45, 10)
    o = torch.stack([b, torch.zeros_like(b), torch.full_like(b, 2.0)], -1)
    d = torch.tensor([0.0, 0.0, -1.0]).expand_as(o)
    out = render_rays(field, o, d, n_samples=2048, early_stop=-1.0)
    chord = 2 * torch.sqrt(0.25 - b ** 2)
    assert torch.allclose(out["opacity"], 1 - torch.exp(-3.0 * chord), atol=3e-3)
    # expected depth of a uniform slab: closed form of int t k e^{-k(t - t0)} dt over the chord
    t0 = 2.0 - chord / 2
    k = 3.0
    expect = (t0 * (1 - torch.exp(-k * chord)) + (1 - torch.exp(-k * chord) * (1 + k * chord)) / k)
    assert torch.allclose(out["depth"], expect, atol=5e-3)
    # background blends with 1 - opacity
    out = render_rays(field, o, d, n_samples=2048, background=torch.ones(10, 3))
    assert torch.allclose(out["rgb"], field.color * out["opacity"][:, None] + (1 - out["opacity"][:, None]),
                          atol=1e-4)


def test_occupancy_grid_skips_samples_but_keeps_the_image():
    torch.manual_seed(0)
    field = RadianceField(resolutions=(8, 16), blob_density=8.0, blob_radius=0.3)
    cams = sample_cameras(2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = render(field, cams, 16, background=(1.0, 1.0, 1.0), n_samples=48, early_stop=-1.0)
        grid = OccupancyGrid(resolution=16, threshold=0.01)
        grid.update(field.density)
        fast = render(field, cams, 16, background=(1.0, 1.0, 1.0), n_samples=48, occupancy=grid)
    assert fast["n_evaluated"] < 0.4 * full["n_evaluated"]
    tol = max_optical_depth_error(0.01, 1.0) + 2e-3   # skipped optical depth + early termination
    assert (fast["rgb"] - full["rgb"]).abs().max() < tol
    assert (fast["opacity"] - full["opacity"]).abs().max() < tol


def test_early_termination_stops_opaque_rays():
    field = UniformSphere(k=200.0, r=0.5)
    o = torch.tensor([[0.0, 0.0, 2.0]])
    d = torch.tensor([[0.0, 0.0, -1.0]])
    out = render_rays(field, o, d, n_samples=256, chunk=8, early_stop=1e-4)
    full = render_rays(field, o, d, n_samples=256, chunk=8, early_stop=-1.0)
    assert out["n_evaluated"] < full["n_evaluated"] / 2
    assert abs(out["opacity"].item() - full["opacity"].item()) < 1e-4


def test_normals_of_a_sphere_point_radially():
    field = SmoothSphere(k=10.0, r=0.5)
    x = torch.nn.functional.normalize(torch.randn(200, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    x = x * 0.5
    for method in ("finite_difference", "autograd"):
        n = density_normals(field.density, x, method)
        cos = (n * torch.nn.functional.normalize(x, dim=-1)).sum(-1)
        assert cos.min() > 0.999, method
    # rendered normals on the centre ray face the camera; shading lights the lit side
    cams = make_cameras(0.0, 0.0, 2.0, 40.0)
    out = render(field, cams, 9, shading="lambertian", light_pos=cams.position * 2, n_samples=128)
    assert out["normal"][0, 4, 4] @ torch.tensor([0.0, 0.0, 1.0]) > 0.99
    # an opaque ball shows only front-facing normals; a translucent one shows its back-facing half too
    opaque = render(SmoothSphere(k=300.0, r=0.5), cams, 9, n_samples=256, need_normals=True)
    translucent = render(SmoothSphere(k=1.0, r=0.5), cams, 9, n_samples=256, need_normals=True)
    assert orientation_loss(opaque) < 0.1 * orientation_loss(translucent)


def test_shading_modes_and_regularisers():
    field = SmoothSphere(k=30.0, r=0.5, color=(0.2, 0.4, 0.6))
    cams = make_cameras(0.0, 0.0, 2.0, 40.0)
    light = sample_lights(cams, torch.Generator().manual_seed(0))
    alb = render(field, cams, 9, shading="albedo", n_samples=96)
    lam = render(field, cams, 9, shading="lambertian", light_pos=light, n_samples=96, ambient=0.3)
    tex = render(field, cams, 9, shading="textureless", light_pos=light, n_samples=96, ambient=0.3)
    o = alb["opacity"][0, 4, 4]
    assert torch.allclose(alb["rgb"][0, 4, 4], o * field.color, atol=1e-4)
    # lambertian <= albedo, >= ambient * albedo; textureless is grey
    assert (lam["rgb"] <= alb["rgb"] + 1e-5).all() and (lam["rgb"] >= 0.3 * alb["rgb"] - 1e-5).all()
    assert torch.allclose(tex["rgb"][..., 0], tex["rgb"][..., 2])
    with pytest.raises(ValueError, match="light_pos"):
        render(field, cams, 4, shading="lambertian")
    assert abs(opacity_entropy(torch.tensor([0.5])).item() - math.log(2)) < 1e-5
    assert opacity_entropy(torch.tensor([0.0, 1.0])).item() < 1e-3


def test_field_blob_gradients_and_background():
    torch.manual_seed(0)
    field = RadianceField(resolutions=(8,), blob_density=10.0, blob_radius=0.5)
    x = torch.tensor([[0.0, 0.0, 0.0], [0.9, 0.9, 0.9], [1.5, 0.0, 0.0]])
    dens, alb = field(x)
    assert dens[0] > 5.0 and dens[1] < 1e-3 and dens[2] == 0.0          # blob inside, empty outside box
    assert ((alb >= 0) & (alb <= 1)).all()
    cams = make_cameras(20.0, 30.0, 2.0, 50.0)
    bg = Background("mlp")
    out = render(field, cams, 8, background=bg, n_samples=16)
    out["rgb"].mean().backward()
    assert all(g.grad is not None and g.grad.abs().sum() > 0 for g in field.grids)
    assert bg.mlp[0].weight.grad is not None
    assert torch.allclose(Background("constant", (0.1, 0.2, 0.3))(torch.randn(5, 3)), torch.tensor([0.1, 0.2, 0.3]))


def test_distortion_loss_matches_its_definition_across_chunks():
    """Chunked prefix sums give sum_ij w_i w_j |t_i - t_j| + 1/3 sum_i w_i^2 delta_i computed directly."""
    field = SmoothSphere(k=3.0, r=0.5)
    o = torch.tensor([[0.1, 0.0, 2.0], [0.0, 0.3, 2.0]])
    d = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])
    out = render_rays(field, o, d, n_samples=40, chunk=7, early_stop=-1.0, need_distortion=True)
    from polydiff.threed.render import ray_box
    near, far = ray_box(o, d, 1.0)
    t = near[:, None] + (far - near)[:, None] * (torch.arange(40) + 0.5) / 40
    delta = ((far - near) / 40)[:, None]
    sigma = field.density((o[:, None] + d[:, None] * t[..., None]).reshape(-1, 3)).reshape(2, 40)
    alpha = 1 - torch.exp(-sigma * delta)
    w = alpha * torch.cumprod(torch.cat([torch.ones(2, 1), 1 - alpha[:, :-1]], 1), 1)
    direct = (w[:, :, None] * w[:, None, :] * (t[:, :, None] - t[:, None, :]).abs()).sum((1, 2)) \
        + (w ** 2 * delta).sum(1) / 3
    assert torch.allclose(out["distortion"], direct, rtol=1e-4)
    assert torch.allclose(out["opacity"], w.sum(1), atol=1e-5)
