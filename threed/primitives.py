"""The primitive world: coloured cubes, spheres, cylinders, cones, tori, pyramids and capsules.

Every shape is a signed distance function (negative inside) centred at the origin, +Y up, fitting in
a ball of radius ~0.5. Solids of revolution (cylinder, cone) use the exact distance to their 2D
profile in the (radial, y) half-plane; the pyramid uses the max of its face planes, which is exact
inside and a lower bound outside (its zero set, and so its occupancy, is exact; sphere tracing still
converges because it never oversteps).

A `Scene` is a list of `Part`s (shape, colour, offset, scale); its SDF is the union (min) and a
point's colour is the nearest part's. Compositions ("a red cube on top of a blue sphere") stack or
place parts side by side from each shape's known extents.

`render_scene` sphere-traces a scene from `Cameras` (threed.cameras) with Lambertian shading under a
light near the camera, on a plain background: the multi-view training images of the built-in prior
and the targets of the direct-fit "ceiling" are made here, independently of the volume renderer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .cameras import Cameras, get_rays
from .render import ray_box

# -- shapes ------------------------------------------------------------------------------------------
SHAPES = ("cube", "sphere", "cylinder", "cone", "torus", "pyramid", "capsule")
# half extents (x/z, y) of each unit shape: used to stack and place parts in compositions
EXTENTS = {"cube": (0.4, 0.4), "sphere": (0.5, 0.5), "cylinder": (0.4, 0.45), "cone": (0.45, 0.45),
           "torus": (0.5, 0.15), "pyramid": (0.45, 0.45), "capsule": (0.25, 0.5)}


def _radial(p):
    """(N, 3) -> (N, 2) profile coordinates (distance from the Y axis, y)."""
    return torch.stack([p[:, [0, 2]].norm(dim=-1), p[:, 1]], dim=-1)


def _segment_distance(q, a, b):
    """Distance from 2D points q (N, 2) to the segment a-b."""
    ab = b - a
    h = ((q - a) @ ab / (ab @ ab)).clamp(0.0, 1.0)
    return (q - a - h[:, None] * ab).norm(dim=-1)


def _convex_polygon_sdf(q, verts):
    """Exact signed distance from q (N, 2) to a convex polygon (counter-clockwise vertices (V, 2))."""
    verts = torch.as_tensor(verts, dtype=q.dtype, device=q.device)
    nxt = torch.roll(verts, -1, 0)
    dist = torch.stack([_segment_distance(q, a, b) for a, b in zip(verts, nxt)], -1).amin(-1)
    edge = nxt - verts                                                     # (V, 2)
    outward = torch.stack([edge[:, 1], -edge[:, 0]], -1)                   # right normal of a CCW edge
    side = ((q[:, None, :] - verts[None]) * outward[None]).sum(-1)         # (N, V) > 0 outside that edge
    inside = (side <= 0).all(-1)
    return torch.where(inside, -dist, dist)


def sdf_sphere(p, r=0.5):
    return p.norm(dim=-1) - r


def sdf_cube(p, h=0.4):
    q = p.abs() - h
    return q.clamp(min=0).norm(dim=-1) + q.amax(-1).clamp(max=0)


def sdf_cylinder(p, r=0.4, h=0.45):
    return _convex_polygon_sdf(_radial(p), [(0.0, -h), (r, -h), (r, h), (0.0, h)])


def sdf_cone(p, r=0.45, h=0.45):
    return _convex_polygon_sdf(_radial(p), [(0.0, -h), (r, -h), (0.0, h)])


def sdf_torus(p, major=0.35, minor=0.15):
    q = torch.stack([p[:, [0, 2]].norm(dim=-1) - major, p[:, 1]], -1)
    return q.norm(dim=-1) - minor


def sdf_pyramid(p, half=0.45, h=0.45):
    # side planes through the apex (0, h, 0) and the base edges at y = -h, |x| or |z| = half
    n_side = F.normalize(torch.tensor([2 * h, half], dtype=p.dtype, device=p.device), dim=0)
    ax, az = p[:, 0].abs(), p[:, 2].abs()
    sx = n_side[0] * ax + n_side[1] * (p[:, 1] - h)
    sz = n_side[0] * az + n_side[1] * (p[:, 1] - h)
    return torch.stack([sx, sz, -h - p[:, 1]], -1).amax(-1)


def sdf_capsule(p, r=0.25, half_length=0.25):
    y = p[:, 1].clamp(-half_length, half_length)
    return (p - torch.stack([torch.zeros_like(y), y, torch.zeros_like(y)], -1)).norm(dim=-1) - r


SDF = {"cube": sdf_cube, "sphere": sdf_sphere, "cylinder": sdf_cylinder, "cone": sdf_cone,
       "torus": sdf_torus, "pyramid": sdf_pyramid, "capsule": sdf_capsule}

# -- colours -----------------------------------------------------------------------------------------
PALETTE = {"red": (0.85, 0.1, 0.1), "green": (0.1, 0.65, 0.15), "blue": (0.1, 0.25, 0.85),
           "yellow": (0.95, 0.85, 0.1), "orange": (0.95, 0.5, 0.05), "purple": (0.5, 0.15, 0.7),
           "pink": (0.95, 0.45, 0.7), "cyan": (0.1, 0.8, 0.85), "brown": (0.45, 0.27, 0.1),
           "gray": (0.5, 0.5, 0.5)}
COLORS = tuple(PALETTE)


# -- scenes ------------------------------------------------------------------------------------------
@dataclass
class Part:
    shape: str
    color: str
    offset: tuple = (0.0, 0.0, 0.0)
    scale: float = 1.0

    def __post_init__(self):
        if self.shape not in SDF:
            raise ValueError(f"unknown shape {self.shape!r}; choose from {', '.join(SHAPES)}")
        if self.color not in PALETTE:
            raise ValueError(f"unknown colour {self.color!r}; choose from {', '.join(COLORS)}")


@dataclass
class Scene:
    parts: list = field(default_factory=list)
    relation: str | None = None          # None for one part, else "on top of" / "next to"

    def part_sdfs(self, p: torch.Tensor) -> torch.Tensor:
        """p: (N, 3) -> (N, P) signed distance to each part."""
        cols = []
        for part in self.parts:
            off = torch.as_tensor(part.offset, dtype=p.dtype, device=p.device)
            cols.append(SDF[part.shape]((p - off) / part.scale) * part.scale)
        return torch.stack(cols, -1)

    def sdf(self, p: torch.Tensor) -> torch.Tensor:
        return self.part_sdfs(p).amin(-1)

    def occupancy(self, p: torch.Tensor) -> torch.Tensor:
        return self.sdf(p) < 0

    def color(self, p: torch.Tensor) -> torch.Tensor:
        """(N, 3) -> (N, 3) the palette colour of the nearest part."""
        table = torch.tensor([PALETTE[part.color] for part in self.parts], dtype=p.dtype, device=p.device)
        return table[self.part_sdfs(p).argmin(-1)]


def single(shape: str, color: str) -> Scene:
    return Scene([Part(shape, color)])


def compose(top: tuple, bottom: tuple, relation: str = "on top of", scale: float = 0.55) -> Scene:
    """Two (shape, colour) parts: `top` on top of / next to `bottom`, the pair centred at the origin."""
    (s1, c1), (s2, c2) = top, bottom
    if relation == "on top of":
        h1, h2 = EXTENTS[s1][1] * scale, EXTENTS[s2][1] * scale
        # touching at the contact plane, the pair's vertical span [-(h1 + h2), h1 + h2] centred at 0
        return Scene([Part(s1, c1, (0.0, h2, 0.0), scale), Part(s2, c2, (0.0, -h1, 0.0), scale)], relation)
    if relation == "next to":
        w1, w2 = EXTENTS[s1][0] * scale, EXTENTS[s2][0] * scale
        gap = 0.05
        return Scene([Part(s1, c1, (-w2 - gap / 2, 0.0, 0.0), scale),
                      Part(s2, c2, (w1 + gap / 2, 0.0, 0.0), scale)], relation)
    raise ValueError(f"unknown relation {relation!r}; use 'on top of' or 'next to'")


# -- sphere tracing --------------------------------------------------------------------------------
def trace(scene: Scene, rays_o: torch.Tensor, rays_d: torch.Tensor, steps: int = 96, eps: float = 1e-3,
          bound: float = 1.0):
    """Sphere-trace rays (N, 3) against the scene inside [-bound, bound]^3.

    Returns hit (N,) bool, t (N,) distance, points (N, 3)."""
    near, far = ray_box(rays_o, rays_d, bound)
    t = near.clone()
    hit = torch.zeros_like(t, dtype=torch.bool)
    alive = far > near
    for _ in range(steps):
        if not alive.any():
            break
        idx = alive.nonzero().squeeze(-1)
        d = scene.sdf(rays_o[idx] + rays_d[idx] * t[idx, None])
        t[idx] = t[idx] + d.clamp(min=0.0)
        done = d < eps
        hit[idx[done]] = True
        gone = t[idx] > far[idx]
        alive[idx[done | gone]] = False
    return hit, t, rays_o + rays_d * t[:, None]


def sdf_normals(sdf_fn, p: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    offsets = eps * torch.eye(3, dtype=p.dtype, device=p.device)
    pts = torch.cat([p[:, None] + offsets, p[:, None] - offsets], 1).reshape(-1, 3)
    d = sdf_fn(pts).reshape(-1, 6)
    return F.normalize(d[:, :3] - d[:, 3:], dim=-1)


@torch.no_grad()
def render_scene(scene: Scene, cameras: Cameras, resolution: int, shading: str = "lambertian",
                 background=(1.0, 1.0, 1.0), ambient: float = 0.35, supersample: int = 1,
                 light_pos: torch.Tensor | None = None) -> dict:
    """Render B views of one scene. Returns rgb (B, H, W, 3) in [0, 1], mask (B, H, W) (coverage,
    fractional with supersampling) and depth (B, H, W) (0 where empty).

    shading: "lambertian" (light at `light_pos` (B, 3), default above and right of each camera) or "albedo".
    """
    b, r = len(cameras), resolution * supersample
    rays_o, rays_d = get_rays(cameras, r, r)
    rays_o, rays_d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
    hit, t, pts = trace(scene, rays_o, rays_d)
    albedo = torch.zeros_like(pts)
    albedo[hit] = scene.color(pts[hit])
    if shading == "lambertian":
        if light_pos is None:
            up, right = cameras.rotation[:, :, 1], cameras.rotation[:, :, 0]
            light_pos = cameras.position + 0.8 * cameras.distance[:, None] * (up + 0.5 * right)
        lp = light_pos.repeat_interleave(r * r, 0)
        n = sdf_normals(scene.sdf, pts[hit])
        diffuse = (n * F.normalize(lp[hit] - pts[hit], dim=-1)).sum(-1).clamp(min=0.0)
        albedo[hit] = albedo[hit] * (ambient + (1 - ambient) * diffuse)[:, None]
    elif shading != "albedo":
        raise ValueError(f"shading must be 'lambertian' or 'albedo', got {shading!r}")
    bg = torch.as_tensor(background, dtype=pts.dtype)
    mask = hit.float()
    rgb = torch.where(hit[:, None], albedo, bg.expand_as(albedo))
    depth = torch.where(hit, t, torch.zeros_like(t))

    def pool(x):  # (B*r*r, C) -> (B, H, W, C) averaged over supersample blocks
        x = x.reshape(b, r, r, -1).permute(0, 3, 1, 2)
        return F.avg_pool2d(x, supersample).permute(0, 2, 3, 1) if supersample > 1 else x.permute(0, 2, 3, 1)

    return {"rgb": pool(rgb), "mask": pool(mask[:, None])[..., 0], "depth": pool(depth[:, None])[..., 0]}
