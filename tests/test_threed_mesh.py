"""Marching cubes, the automatic iso-level, clean-up, export round trips and the preview."""

import math

import numpy as np
import pytest
import torch
import trimesh
from polydiff.threed.io import OutputError
from polydiff.threed.mesh import (
    EmptyFieldError,
    density_grid,
    export_mesh,
    extract_mesh,
    grid_to_mesh,
    hidden_depth_grid,
    turntable,
)


class SoftBall:
    """k * sigmoid((r0 - |x - c|) / s), coloured by position (so vertex colours can be checked)."""

    def __init__(self, k=100.0, s=0.01, r0=0.5, centre=(0.0, 0.0, 0.0), bound=1.0):
        self.k, self.s, self.r0, self.bound = k, s, r0, bound
        self.c = torch.tensor(centre)

    def density(self, x):
        return self.k * torch.sigmoid((self.r0 - (x - self.c).norm(dim=-1)) / self.s)

    def albedo(self, x):
        return ((x + 1) / 2).clamp(0, 1)

    def __call__(self, x):
        return self.density(x), self.albedo(x)


def test_sphere_mesh_is_watertight_with_the_right_volume_and_round_trips(tmp_path):
    field = SoftBall()
    mesh, _level = extract_mesh(field, resolution=64, level=50.0)     # k / 2: the surface is at r0 exactly
    assert mesh.is_watertight and mesh.volume > 0
    assert abs(mesh.volume / (4 / 3 * math.pi * 0.5 ** 3) - 1) < 0.04
    # vertex colours are the albedo just inside the surface
    expect = ((mesh.vertices - 0.5 * (2 / 63) * mesh.vertex_normals + 1) / 2 * 255)
    assert np.abs(mesh.visual.vertex_colors[:, :3] - expect).max() <= 1.5
    for suffix in (".glb", ".obj", ".ply"):
        path = export_mesh(mesh, tmp_path / f"ball{suffix}")
        back = trimesh.load(path, force="mesh")
        assert back.is_watertight, suffix
        assert abs(back.volume - mesh.volume) < 1e-4 * mesh.volume, suffix
        vis = back.visual.to_color() if hasattr(back.visual, "to_color") else back.visual
        got = vis.vertex_colors[:, :3].astype(float).mean(0)
        assert np.abs(got - mesh.visual.vertex_colors[:, :3].mean(0)).max() < 2.0, suffix
    assert not list(tmp_path.glob("*.tmp"))


def rendered_radius(k, s, incidence_deg, r0=0.5):
    """Where a ray meeting the ball k sigmoid((r0 - r)/s) at the given incidence angle reaches
    transmittance 1/2 (flat-surface approximation): the radial optical depth k s log(1 + e^{(r0 - r)/s})
    equals ln(2) cos(incidence)."""
    return r0 - s * math.log(2 ** (math.cos(math.radians(incidence_deg)) / (k * s)) - 1)


def test_auto_threshold_recovers_the_rendered_surface():
    """The surface rule puts the mesh where the renderer sees the surface: between the head-on (0 deg)
    and the 60 deg crossing radius (axis rays meet a sphere at up to 54.7 deg), for a ball of any
    density scale. A fixed density level cannot: the same constant lands outside that band for one of
    these balls."""
    voxel = 2 / 47
    for k, s in ((100.0, 0.01), (1000.0, 0.01), (20.0, 0.05)):
        mesh, level = extract_mesh(SoftBall(k, s), resolution=48)
        radius = np.linalg.norm(mesh.vertices, axis=1).mean()
        lo, hi = rendered_radius(k, s, 0), rendered_radius(k, s, 60)
        assert lo - voxel / 4 < radius < hi + voxel / 4, (k, s, radius, lo, hi, level)
    fixed = [0.5 + s * math.log(k / 10.0 - 1) for k, s in ((100.0, 0.01), (1000.0, 0.01), (20.0, 0.05))]
    bands = [(rendered_radius(k, s, 0), rendered_radius(k, s, 60)) for k, s in
             ((100.0, 0.01), (1000.0, 0.01), (20.0, 0.05))]
    assert any(not lo - voxel / 4 < r < hi + voxel / 4 for r, (lo, hi) in zip(fixed, bands))


def test_a_dense_skin_gives_a_solid_mesh():
    """Density only in a shell 0.45 < r < 0.5 (as a field fitted to images may be): the renders show a
    ball, and so does the mesh: solid, watertight, one component, the volume of the r = 0.5 ball."""
    shell = lambda x: 200.0 * ((x.norm(dim=-1) > 0.45) & (x.norm(dim=-1) < 0.5)).float()
    mesh = grid_to_mesh(hidden_depth_grid(shell, 48))
    assert mesh.is_watertight and len(mesh.split(only_watertight=False)) == 1
    assert abs(mesh.volume / (4 / 3 * math.pi * 0.5 ** 3) - 1) < 0.05
    # a torus keeps its hole: the axis rays through the hole see nothing
    torus = lambda x: 200.0 * ((torch.stack([x[:, [0, 2]].norm(dim=-1) - 0.4, x[:, 1]], -1).norm(dim=-1) < 0.15)
                               .float())
    t = grid_to_mesh(hidden_depth_grid(torus, 48))
    assert t.is_watertight and t.euler_number == 0                      # genus one


def test_cleanup_drops_floaters_and_keeps_large_parts():
    big, small, other = SoftBall(r0=0.4, centre=(-0.3, 0, 0)), SoftBall(r0=0.08, centre=(0.7, 0.7, 0.7)), \
        SoftBall(r0=0.3, centre=(0.5, -0.3, 0))
    density = lambda x: big.density(x) + small.density(x) + other.density(x)
    mesh = grid_to_mesh(density_grid(density, 64), 1.0, level=50.0)
    parts = mesh.split(only_watertight=False)
    assert len(parts) == 2 and mesh.is_watertight                        # the small floater is gone
    assert all(p.volume > 0.05 for p in parts)
    assert len(mesh.faces) == len(mesh.nondegenerate_faces().nonzero()[0])


def test_bad_outputs_and_empty_fields_raise_clear_errors(tmp_path):
    mesh = trimesh.creation.icosphere()
    with pytest.raises(OutputError, match="unsupported file type"):
        export_mesh(mesh, tmp_path / "a.stl")
    with pytest.raises(OutputError, match="is a folder"):
        export_mesh(mesh, tmp_path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        export_mesh(mesh, tmp_path / "f" / "a.glb")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
    empty = lambda x: torch.zeros(len(x))
    with pytest.raises(EmptyFieldError, match="empty"):
        grid_to_mesh(hidden_depth_grid(empty, 16))


def test_turntable_writes_a_gif_and_a_grid(tmp_path):
    from PIL import Image

    field = SoftBall()
    gif = turntable(field, tmp_path / "t.gif", n_frames=4, resolution=16, n_samples=32)
    with Image.open(gif) as im:
        assert im.n_frames == 4 and im.size == (16, 16)
    png = turntable(field, tmp_path / "t.png", n_frames=4, resolution=16, n_samples=32)
    with Image.open(png) as im:
        assert im.size == (32, 32)
