"""From a density field to a coloured triangle mesh on disk, and a turntable preview.

Threshold rule (no hand-tuned constant): the mesh surface is put where the volume renderer puts it.
Parallel rays are cast through the field from many random directions; along each ray that becomes opaque,
the point where the transmittance falls to 1/2 (optical depth ln 2: the median of the ray's
termination distribution, i.e. its median depth) is found, and the density there is read. The
iso-level is the median of those densities over rays. For a sharp surface this is close to where the
density jumps; for a soft field it follows how soft the field is, so the mesh stays where the images
showed the object. (Rays meeting the surface obliquely cross ln 2 a little further out, so on a soft
surface the level sits between the head-on and the grazing crossing; tests/test_threed_mesh.py bounds it.)

Marching cubes (skimage) runs on the grid padded with zeros, so a shape touching the box still gives
a closed mesh. Clean-up merges duplicate vertices, drops degenerate faces and keeps the connected
components with at least `keep_fraction` of the largest one's faces (floaters go). Vertex colours are
the field's albedo read just inside the surface (half a voxel along the inward normal), where the
colour was optimised, rather than in the empty space just outside.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import trimesh
from skimage.measure import marching_cubes

from .cameras import orbit_cameras
from .io import atomic_write, check_output_file
from .render import render

MESH_SUFFIXES = (".glb", ".obj", ".ply")
PREVIEW_SUFFIXES = (".gif", ".png")


class EmptyFieldError(ValueError):
    """The field has no surface to mesh (every ray stays mostly transparent)."""


@torch.no_grad()
def density_grid(density_fn, resolution: int = 64, bound: float = 1.0, chunk: int = 65536) -> torch.Tensor:
    """Density at the (R, R, R) grid points linspace(-bound, bound, R)^3, indexed [x, y, z]."""
    ax = torch.linspace(-bound, bound, resolution)
    pts = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    return torch.cat([density_fn(p) for p in pts.split(chunk)]).reshape(resolution, resolution, resolution)


def sample_grid(grid: torch.Tensor, pts: torch.Tensor, bound: float) -> torch.Tensor:
    """Trilinear density at pts (N, 3) from a grid indexed [x, y, z]; zero outside."""
    vol = grid.permute(2, 1, 0)[None, None]                           # grid_sample wants (z, y, x)
    u = (pts / bound).reshape(1, -1, 1, 1, 3)
    return F.grid_sample(vol, u, mode="bilinear", padding_mode="zeros", align_corners=True).reshape(-1)


def auto_threshold(density_fn, bound: float = 1.0, n_rays: int = 2048, n_samples: int = 256,
                   seed: int = 0) -> float:
    """The median, over rays that become opaque, of the density where transmittance reaches 1/2.

    density_fn: (N, 3) -> (N,), the continuous field (not its grid, whose trilinear smear would move
    the level on an under-resolved surface)."""
    g = torch.Generator().manual_seed(seed)
    d = F.normalize(torch.randn(n_rays, 3, generator=g), dim=-1)           # parallel rays, random directions
    helper = torch.where(d[:, :1].abs() < 0.9, torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]]))
    e1 = F.normalize(torch.linalg.cross(d, helper, dim=-1), dim=-1)
    e2 = torch.linalg.cross(d, e1, dim=-1)
    uv = (torch.rand(n_rays, 2, generator=g) * 2 - 1) * bound
    length = 2 * math.sqrt(3) * bound
    origin = -0.5 * length * d + uv[:, :1] * e1 + uv[:, 1:] * e2
    t = (torch.arange(n_samples) + 0.5) / n_samples * length
    pts = (origin[:, None] + d[:, None] * t[None, :, None]).reshape(-1, 3)  # (R * S, 3)
    with torch.no_grad():
        sigma = torch.cat([density_fn(p) for p in pts.split(65536)]).float()
    sigma = torch.where((pts.abs() <= bound).all(-1), sigma, torch.zeros_like(sigma)).reshape(n_rays, n_samples)
    tau = torch.cumsum(sigma * (length / n_samples), dim=1)
    crosses = tau[:, -1] >= math.log(2.0)
    if crosses.sum() < 8:
        raise EmptyFieldError("the field is (almost) empty: no ray becomes half opaque, so there is no "
                              "surface to mesh; train longer or check the density scale")
    tau, sigma = tau[crosses], sigma[crosses]
    i = torch.argmax((tau >= math.log(2.0)).int(), dim=1)                   # first sample past ln 2
    prev_tau = torch.where(i > 0, tau.gather(1, (i - 1).clamp(min=0)[:, None])[:, 0], torch.zeros_like(i, dtype=tau.dtype))
    cur_tau = tau.gather(1, i[:, None])[:, 0]
    frac = ((math.log(2.0) - prev_tau) / (cur_tau - prev_tau).clamp(min=1e-12)).clamp(0, 1)
    prev_sigma = torch.where(i > 0, sigma.gather(1, (i - 1).clamp(min=0)[:, None])[:, 0], torch.zeros_like(frac))
    level = prev_sigma + frac * (sigma.gather(1, i[:, None])[:, 0] - prev_sigma)
    return float(level.median())


def clean_mesh(mesh: trimesh.Trimesh, keep_fraction: float = 0.1) -> trimesh.Trimesh:
    """Merge vertices, drop degenerate faces and unreferenced vertices, keep the large components."""
    mesh.merge_vertices()
    mesh.update_faces(mesh.nondegenerate_faces())
    mesh.remove_unreferenced_vertices()
    parts = mesh.split(only_watertight=False)
    if len(parts) > 1:
        biggest = max(len(p.faces) for p in parts)
        parts = [p for p in parts if len(p.faces) >= keep_fraction * biggest]
        mesh = trimesh.util.concatenate(parts)
    if mesh.is_watertight and mesh.volume < 0:
        mesh.invert()
    return mesh


@torch.no_grad()
def grid_to_mesh(grid: torch.Tensor, bound: float = 1.0, level: float | None = None, color_fn=None,
                 keep_fraction: float = 0.1) -> trimesh.Trimesh:
    """Marching cubes on a density grid [x, y, z] over [-bound, bound]^3 at `level` (auto when None:
    from the grid's own trilinear field; pass the level from the continuous field when there is one).

    color_fn: (N, 3) points -> (N, 3) albedo in [0, 1], or None for a grey mesh."""
    if level is None:
        level = auto_threshold(lambda p: sample_grid(grid.float(), p, bound), bound)
    res = grid.shape[0]
    vol = np.pad(grid.cpu().numpy().astype(np.float32), 1, constant_values=0.0)
    if not vol.min() < level < vol.max():
        raise EmptyFieldError(f"iso-level {level:.4g} is outside the density range "
                              f"[{vol.min():.4g}, {vol.max():.4g}]: no surface at this level")
    spacing = 2 * bound / (res - 1)
    verts, faces, _, _ = marching_cubes(vol, level=level, spacing=(spacing,) * 3)
    verts = verts - bound - spacing                                          # undo the padding offset
    mesh = trimesh.Trimesh(verts, faces[:, ::-1], process=False)             # skimage winds inward here
    mesh = clean_mesh(mesh, keep_fraction)
    if color_fn is not None:
        inside = torch.as_tensor(mesh.vertices - 0.5 * spacing * mesh.vertex_normals, dtype=torch.float32)
        rgb = color_fn(inside).clamp(0, 1).cpu().numpy()
        mesh.visual.vertex_colors = np.concatenate([(rgb * 255 + 0.5).astype(np.uint8),
                                                    np.full((len(rgb), 1), 255, np.uint8)], 1)
    return mesh


def extract_mesh(field, resolution: int = 64, level: float | None = None, keep_fraction: float = 0.1):
    """Field -> cleaned, coloured mesh. Returns (mesh, level used)."""
    grid = density_grid(field.density, resolution, field.bound)
    if level is None:
        level = auto_threshold(field.density, field.bound)
    mesh = grid_to_mesh(grid, field.bound, level, color_fn=lambda p: field.albedo(p), keep_fraction=keep_fraction)
    return mesh, level


def export_mesh(mesh: trimesh.Trimesh, path) -> Path:
    """Write .glb / .obj / .ply with vertex colours, atomically."""
    path = check_output_file(path, MESH_SUFFIXES)
    if len(mesh.faces) == 0:
        raise EmptyFieldError(f"refusing to write an empty mesh to {path}")
    kind = path.suffix.lower()[1:]

    def write(tmp: Path):
        data = mesh.export(file_type=kind)
        tmp.write_bytes(data if isinstance(data, bytes) else data.encode())
    return atomic_write(path, write)


@torch.no_grad()
def turntable(field, path, n_frames: int = 12, resolution: int = 96, elevation: float = 20.0,
              distance: float = 2.2, fov: float = 45.0, background=(1.0, 1.0, 1.0), n_samples: int = 96) -> Path:
    """Render the field from `n_frames` azimuths (Lambertian, light over the camera) to a .gif or a
    .png grid, atomically."""
    from PIL import Image

    path = check_output_file(path, PREVIEW_SUFFIXES)
    cams = orbit_cameras(n_frames, elevation, distance, fov)
    light = cams.position + 0.5 * cams.rotation[:, :, 1] * distance
    out = render(field, cams, resolution, background=background, shading="lambertian", light_pos=light,
                 n_samples=n_samples)
    frames = (out["rgb"].clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)        # (F, H, W, 3)
    if path.suffix.lower() == ".gif":
        imgs = [Image.fromarray(f) for f in frames]
        return atomic_write(path, lambda tmp: imgs[0].save(tmp, format="GIF", save_all=True,
                                                           append_images=imgs[1:], duration=100, loop=0))
    cols = math.ceil(math.sqrt(n_frames))
    rows = math.ceil(n_frames / cols)
    sheet = np.full((rows * resolution, cols * resolution, 3), 255, np.uint8)
    for k, f in enumerate(frames):
        r, c = divmod(k, cols)
        sheet[r * resolution:(r + 1) * resolution, c * resolution:(c + 1) * resolution] = f
    return atomic_write(path, lambda tmp: Image.fromarray(sheet).save(tmp, format="PNG"))
