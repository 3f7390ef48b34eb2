"""Metrics where ground truth exists (the primitive world), and the direct-fit "ceiling".

Both the mesh and the true scene are first normalised the same way: centred on the centroid of their
solid and scaled so its r.m.s. radius (sqrt of the mean |x - centroid|^2 over the volume) is 1. SDS does
not fix an object's size or position, so shape is compared up to a translation and a uniform scale.
Volume moments are used rather than the bounding box because a box hangs on single extreme points:
marching cubes clips a cone's or pyramid's apex by a grid-dependent amount, which would rescale the
whole shape. (If either mesh is not watertight, both fall back to the bounding box, largest half
extent 1.) Then:

- volumetric IoU on a G^3 grid covering both normalised shapes: the mesh's inside by ray parity along
  +z columns (pure torch; no rtree/embree), the scene's by its signed distance;
- Chamfer distance: mean nearest-neighbour distance from mesh surface samples to the true surface plus
  the reverse (not squared), in the normalised units above (r.m.s. radius 1), the true surface sampled
  from a fine marching-cubes mesh of the SDF;
- colour error: mean absolute RGB difference (in [0, 1]) between each mesh vertex's colour and the
  palette colour of the nearest true part.

`fit_ceiling` fits the radiance field directly to albedo renders of the true scene (photometric MSE,
no diffusion prior), then meshes it: it checks the renderer + field + mesh export chain end to end,
and is the best a prior-driven generation could do with the same field and settings.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import trimesh

from .cameras import get_rays, sample_cameras
from .field import RadianceField
from .mesh import density_grid, extract_mesh, grid_to_mesh
from .primitives import Scene, render_scene
from .render import OccupancyGrid, render_rays


def bbox_normalisation(points: np.ndarray):
    """(centre (3,), scale) mapping points to a box whose largest half extent is 1."""
    lo, hi = points.min(0), points.max(0)
    return (lo + hi) / 2, float((hi - lo).max() / 2)


def moment_normalisation(mesh: trimesh.Trimesh):
    """(centroid (3,), r.m.s. radius) of the solid a watertight mesh bounds (unit density).
    trace(I) about the centroid = 2 * integral |x - c|^2 dV, so rms^2 = trace(I) / (2 V)."""
    return np.asarray(mesh.center_mass), float(np.sqrt(np.trace(mesh.moment_inertia) / (2.0 * mesh.volume)))


def reference_mesh(scene: Scene, resolution: int = 96, bound: float = 1.0) -> trimesh.Trimesh:
    """The true surface as a fine marching-cubes mesh of the scene's SDF (level 0 of -sdf)."""
    grid = density_grid(lambda p: -scene.sdf(p), resolution, bound)
    return grid_to_mesh(grid, bound, level=0.0, keep_fraction=0.0)


def mesh_occupancy(mesh: trimesh.Trimesh, pts: torch.Tensor) -> torch.Tensor:
    """Inside test for points on a regular grid given as (X, Y, Z, 3): parity of the number of surface
    crossings above each point along +z. Returns (X, Y, Z) bool.

    Each triangle is paired only with the grid columns its xy bounding box covers, so the work grows
    with the number of (triangle, column) overlaps, not triangles times columns."""
    x_n, y_n, z_n = pts.shape[:3]
    xs, ys, zq = pts[:, 0, 0, 0].double(), pts[0, :, 0, 1].double(), pts[0, 0, :, 2].double()
    # a tiny irrational shift keeps columns off shared edges and vertices (no double counting)
    xs, ys = xs + 1.3e-7, ys + 0.7e-7
    tri = torch.tensor(np.asarray(mesh.triangles), dtype=torch.float64)           # (F, 3, 3)
    lo, hi = tri[:, :, :2].amin(1), tri[:, :, :2].amax(1)
    ix0, ix1 = torch.searchsorted(xs, lo[:, 0].contiguous()), torch.searchsorted(xs, hi[:, 0].contiguous(), right=True) - 1
    iy0, iy1 = torch.searchsorted(ys, lo[:, 1].contiguous()), torch.searchsorted(ys, hi[:, 1].contiguous(), right=True) - 1
    nx, ny = (ix1 - ix0 + 1).clamp(min=0), (iy1 - iy0 + 1).clamp(min=0)
    n_pairs = nx * ny
    fi = torch.repeat_interleave(torch.arange(len(tri)), n_pairs)                   # (P,)
    k = torch.arange(len(fi)) - torch.repeat_interleave(torch.cumsum(n_pairs, 0) - n_pairs, n_pairs)
    cx, cy = ix0[fi] + k // ny[fi], iy0[fi] + k % ny[fi]
    p = torch.stack([xs[cx], ys[cy]], -1)
    a, b, c = tri[fi, 0], tri[fi, 1], tri[fi, 2]
    det = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    det = torch.where(det.abs() < 1e-14, torch.full_like(det, float("nan")), det)  # edge-on: never hit
    u = ((b[:, 0] - p[:, 0]) * (c[:, 1] - p[:, 1]) - (c[:, 0] - p[:, 0]) * (b[:, 1] - p[:, 1])) / det
    v = ((c[:, 0] - p[:, 0]) * (a[:, 1] - p[:, 1]) - (a[:, 0] - p[:, 0]) * (c[:, 1] - p[:, 1])) / det
    w = 1 - u - v
    hit = (u >= 0) & (v >= 0) & (w >= 0)
    z = (u * a[:, 2] + v * b[:, 2] + w * c[:, 2])[hit]
    column = (cx * y_n + cy)[hit]
    counts = torch.zeros(x_n * y_n, z_n, dtype=torch.long)
    for s in range(0, len(z), 1 << 16):
        counts.index_add_(0, column[s:s + (1 << 16)], (z[s:s + (1 << 16), None] > zq[None]).long())
    return (counts % 2 == 1).reshape(x_n, y_n, z_n)


def nearest_distance(a: np.ndarray, b: np.ndarray, chunk: int = 2048) -> torch.Tensor:
    """For each point of a (N, 3), the distance to the nearest point of b (M, 3)."""
    bt = torch.as_tensor(b, dtype=torch.float64)
    return torch.cat([torch.cdist(q, bt).min(1).values for q in torch.as_tensor(a, dtype=torch.float64).split(chunk)])


def evaluate_mesh(mesh: trimesh.Trimesh, scene: Scene, resolution: int = 64, n_points: int = 5000,
                  seed: int = 0, reference: trimesh.Trimesh | None = None, normalise: bool = True) -> dict:
    """IoU, Chamfer and colour error of `mesh` against the true `scene` (see the module docstring).
    normalise=False compares in world coordinates (grid over [-1.1, 1.1]^3, Chamfer in world units)."""
    ref = reference if reference is not None else reference_mesh(scene)
    if len(mesh.faces) == 0:
        return {"iou": 0.0, "chamfer": float("nan"), "color_error": float("nan")}
    if not normalise:
        c_m, s_m, c_t, s_t = np.zeros(3), 1.0, np.zeros(3), 1.0
    elif mesh.is_watertight and ref.is_watertight and mesh.volume > 0 and ref.volume > 0:
        (c_m, s_m), (c_t, s_t) = moment_normalisation(mesh), moment_normalisation(ref)
    else:
        c_m, s_m = bbox_normalisation(np.asarray(mesh.vertices))
        c_t, s_t = bbox_normalisation(np.asarray(ref.vertices))
    extent = 1.1 if not normalise else 1.05 * max(np.abs((np.asarray(mesh.vertices) - c_m) / s_m).max(),
                                                  np.abs((np.asarray(ref.vertices) - c_t) / s_t).max())
    ax = torch.linspace(-extent, extent, resolution, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1)           # (G, G, G, 3) normalised
    inside_mesh = mesh_occupancy(mesh, grid * s_m + torch.as_tensor(c_m))
    inside_true = scene.occupancy((grid * s_t + torch.as_tensor(c_t)).reshape(-1, 3).float()).reshape(grid.shape[:3])
    union = (inside_mesh | inside_true).sum().item()
    iou = (inside_mesh & inside_true).sum().item() / max(union, 1)

    pa = (trimesh.sample.sample_surface(mesh, n_points, seed=seed)[0] - c_m) / s_m
    pb = (trimesh.sample.sample_surface(ref, n_points, seed=seed + 1)[0] - c_t) / s_t
    chamfer = (nearest_distance(pa, pb).mean() + nearest_distance(pb, pa).mean()).item()

    color_error = float("nan")
    colors = getattr(mesh.visual, "vertex_colors", None)
    if colors is not None and len(colors) == len(mesh.vertices):
        v_true = torch.as_tensor((np.asarray(mesh.vertices) - c_m) / s_m * s_t + c_t, dtype=torch.float32)
        truth = scene.color(v_true).numpy()
        color_error = float(np.abs(colors[:, :3] / 255.0 - truth).mean())
    return {"iou": iou, "chamfer": chamfer, "color_error": color_error}


def default_lights(cams) -> torch.Tensor:
    """The light render_scene uses by default: above and to the right of each camera, (B, 3)."""
    up, right = cams.rotation[:, :, 1], cams.rotation[:, :, 0]
    return cams.position + 0.8 * cams.distance[:, None] * (up + 0.5 * right)


def fit_ceiling(scene: Scene, iters: int = 300, image_resolution: int = 32, n_views: int = 32,
                rays_per_step: int = 1024, n_samples: int = 48, lr: float = 0.02, mesh_resolution: int = 64,
                shading: str = "lambertian", ambient: float = 0.35, distortion_weight: float = 0.0,
                seed: int = 0, device="cpu",
                field_kwargs: dict | None = None, progress_bar=None):
    """Fit a RadianceField to renders of `scene`; return (field, mesh, stats).

    Renders are shaded like the training images of the prior (Lambertian, light above the camera;
    shading cues pin down where the surface is, which flat albedo images leave free inside the
    silhouettes) and composited on a random background colour each step (a floater the colour of a
    fixed background would be invisible). `iters = 0` gives the untrained-field baseline."""
    dev = torch.device(device)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    field = RadianceField(**(field_kwargs or {})).to(dev)
    cams = sample_cameras(n_views, elevation_range=(-30.0, 80.0), distance_range=(1.8, 2.2),
                          fov_range=(45.0, 50.0), generator=g)
    lights = default_lights(cams)
    img = render_scene(scene, cams, image_resolution, shading=shading, supersample=2, ambient=ambient,
                       light_pos=lights, background=(0.0, 0.0, 0.0))
    rays_o, rays_d = get_rays(cams, image_resolution)
    per_pixel_light = lights.repeat_interleave(image_resolution ** 2, 0)
    rays_o, rays_d, fg, light = (t.reshape(-1, 3).to(dev) for t in (rays_o, rays_d, img["rgb"], per_pixel_light))
    mask = img["mask"].reshape(-1).to(dev)
    occupancy = OccupancyGrid(32, field.bound).to(dev)
    opt = torch.optim.Adam(field.parameters(), lr=lr)
    t0 = time.perf_counter()
    steps = progress_bar(range(iters)) if progress_bar else range(iters)
    loss = torch.tensor(float("nan"))
    for it in steps:
        if it % 16 == 0 and it >= 32:
            occupancy.update(field.density)
        idx = torch.randint(0, len(rays_o), (rays_per_step,), generator=g).to(dev)
        bg = torch.rand(1, 3, generator=g).to(dev).expand(rays_per_step, 3)
        out = render_rays(field, rays_o[idx], rays_d[idx], n_samples=n_samples, background=bg,
                          occupancy=occupancy if it >= 32 else None, shading=shading,
                          light_pos=light[idx] if shading != "albedo" else None, ambient=ambient,
                          need_distortion=distortion_weight > 0, generator=g)
        target = fg[idx] + (1.0 - mask[idx])[:, None] * bg
        loss = (out["rgb"] - target).pow(2).mean()
        if distortion_weight > 0:
            loss = loss + distortion_weight * out["distortion"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress_bar:
            steps.set_postfix(loss=f"{loss.item():.4f}")
    field.eval()
    mesh, level = extract_mesh(field, mesh_resolution)
    return field, mesh, {"fit_seconds": time.perf_counter() - t0, "final_mse": float(loss.detach()), "level": level}
