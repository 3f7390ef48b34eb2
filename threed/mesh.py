"""From a density field to a coloured triangle mesh on disk, and a turntable preview.

Surface rule (no hand-tuned density threshold): the mesh is put where the volume renderer puts the
surface. For every grid point, the optical depth from outside is integrated along the six axis
directions (tau = int sigma ds from the box face to the point); the point is inside when it is past
the median depth of every one of those rays, i.e. min over directions of tau >= ln 2 (transmittance
1/2). Marching cubes runs on that min-optical-depth grid at ln 2. So:
- a sharp surface is meshed where its density jumps, a soft one where the renders see it, whatever
  the density scale (a fixed density level is right for one scale only; tests/test_threed_mesh.py);
- what lies behind the visible surface from every axis direction is solid, so a field that is dense
  only in a skin (images never see its inside) still gives a solid, watertight mesh; concavities open
  to an axis direction (a torus hole) stay open. (Concavities visible only obliquely are filled.)
A density `level` can still be given by hand; then cavities enclosed by the solid are filled.

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
import trimesh
from scipy.ndimage import binary_fill_holes
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


def hidden_depth_grid(density_fn, resolution: int = 64, bound: float = 1.0, supersample: int = 2) -> torch.Tensor:
    """min over the six axis directions of the optical depth from the box face to each grid point,
    (R, R, R) indexed [x, y, z]; integrated by the trapezoid rule on a `supersample` times finer grid."""
    fine = (resolution - 1) * supersample + 1
    sigma = density_grid(density_fn, fine, bound).double()
    h = 2 * bound / (fine - 1)
    best = None
    for dim in range(3):
        for flip in (False, True):
            s = sigma.flip(dim) if flip else sigma
            seg = 0.5 * (s.narrow(dim, 0, fine - 1) + s.narrow(dim, 1, fine - 1)) * h
            tau = torch.cat([torch.zeros_like(s.narrow(dim, 0, 1)), seg.cumsum(dim)], dim)
            tau = tau.flip(dim) if flip else tau
            best = tau if best is None else torch.minimum(best, tau)
    return best[::supersample, ::supersample, ::supersample].float()


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
                 keep_fraction: float = 0.1, fill_cavities: bool = True) -> trimesh.Trimesh:
    """Marching cubes on a grid [x, y, z] over [-bound, bound]^3 at `level`, inside where grid > level.

    Pass the `hidden_depth_grid` with level ln 2 (the default when level is None), or a density grid
    with a density level. color_fn: (N, 3) points -> (N, 3) albedo in [0, 1], or None for a grey mesh."""
    if level is None:
        level = math.log(2.0)
    res = grid.shape[0]
    vol = np.pad(grid.cpu().numpy().astype(np.float32), 1, constant_values=0.0)
    if not vol.min() < level < vol.max():
        raise EmptyFieldError(f"the field is empty at level {level:.4g} (values in [{vol.min():.4g}, "
                              f"{vol.max():.4g}]): no surface to mesh; train longer or check the density scale")
    if fill_cavities:
        # voids enclosed by the solid are seen from no viewpoint, so they are not part of the object
        solid = vol > level
        cavity = binary_fill_holes(solid) & ~solid
        vol[cavity] = max(2.0 * level, level + 1.0)
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
    """Field -> cleaned, coloured mesh, by the surface rule above (or at a density `level` if given).
    Returns (mesh, level) where level is ln 2 in optical depth, or the density level given."""
    params = list(field.parameters()) if hasattr(field, "parameters") else []
    dev = params[0].device if params else torch.device("cpu")
    density = lambda p: field.density(p.to(dev)).cpu()                      # points are made on the CPU
    albedo = lambda p: field.albedo(p.to(dev)).cpu()
    if level is None:
        grid, level = hidden_depth_grid(density, resolution, field.bound), math.log(2.0)
    else:
        grid = density_grid(density, resolution, field.bound)
    mesh = grid_to_mesh(grid, field.bound, level, color_fn=albedo, keep_fraction=keep_fraction)
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
    path = check_output_file(path, PREVIEW_SUFFIXES)
    cams = orbit_cameras(n_frames, elevation, distance, fov)
    light = cams.position + 0.5 * cams.rotation[:, :, 1] * distance
    out = render(field, cams, resolution, background=background, shading="lambertian", light_pos=light,
                 n_samples=n_samples)
    return write_frames(out["rgb"], path)


def write_frames(rgb: torch.Tensor, path) -> Path:
    """Frames (F, H, W, 3) in [0, 1] -> a looping .gif or a .png contact sheet, atomically."""
    from PIL import Image

    path = check_output_file(path, PREVIEW_SUFFIXES)
    frames = (rgb.detach().cpu().clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)   # (F, H, W, 3)
    if path.suffix.lower() == ".gif":
        imgs = [Image.fromarray(f) for f in frames]
        return atomic_write(path, lambda tmp: imgs[0].save(tmp, format="GIF", save_all=True,
                                                           append_images=imgs[1:], duration=100, loop=0))
    n_frames, resolution = len(frames), frames.shape[1]
    cols = math.ceil(math.sqrt(n_frames))
    rows = math.ceil(n_frames / cols)
    sheet = np.full((rows * resolution, cols * resolution, 3), 255, np.uint8)
    for k, f in enumerate(frames):
        r, c = divmod(k, cols)
        sheet[r * resolution:(r + 1) * resolution, c * resolution:(c + 1) * resolution] = f
    return atomic_write(path, lambda tmp: Image.fromarray(sheet).save(tmp, format="PNG"))
