"""Volume rendering of a radiance field, with an occupancy grid and early ray termination.

Along each ray the box [-bound, bound]^3 is cut into S equal segments (stratified when a generator
is given). The usual quadrature: alpha_i = 1 - exp(-sigma_i delta_i), T_i = prod_{j<i} (1 - alpha_j),
w_i = T_i alpha_i; colour = sum w_i c_i + (1 - sum w_i) * background.

Two ways of not evaluating the field where it cannot matter:
- an `OccupancyGrid` (a coarse boolean grid refreshed from the density, dilated by one cell) marks
  empty space; samples there get zero density without a field evaluation;
- samples are walked in chunks along the ray and a ray leaves the active set once its transmittance
  falls below `early_stop` (everything behind it would contribute less than that).
Both change the image by at most the skipped optical depth, which the tests bound.

Shading modes: `albedo` (the field's colour), `lambertian` (albedo * (ambient + (1 - ambient) max(0, n.l))
with a point light), `textureless` (the same with a white albedo: shape only, as DreamFusion uses to
stop texture from faking geometry). Normals come from the density gradient (field.density_normals).

Regularisers: DreamFusion's orientation loss sum_i stopgrad(w_i) max(0, n_i . d)^2 (normals facing away
from the camera, i.e. along the ray direction d, are penalised), opacity entropy and opacity sparsity,
and Mip-NeRF 360's distortion loss (weights concentrated at one depth: a sharp surface, which images of
a uniformly coloured object do not otherwise ask for).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .cameras import Cameras, get_rays
from .field import density_normals

SHADINGS = ("albedo", "lambertian", "textureless")


def ray_box(rays_o: torch.Tensor, rays_d: torch.Tensor, bound: float):
    """Entry and exit distances (N,) of rays (N, 3) through [-bound, bound]^3; near == far on a miss."""
    inv = 1.0 / torch.where(rays_d.abs() < 1e-9, torch.full_like(rays_d, 1e-9), rays_d)
    t0 = (-bound - rays_o) * inv
    t1 = (bound - rays_o) * inv
    near = torch.minimum(t0, t1).amax(dim=-1).clamp(min=0.0)
    far = torch.maximum(t0, t1).amin(dim=-1)
    far = torch.maximum(far, near)
    return near, far


class OccupancyGrid(nn.Module):
    """A coarse grid over [-bound, bound]^3 marking cells where the density may be above `threshold`.

    `update` evaluates the density at the 8 corners and the centre of every cell, keeps a running max
    with decay (so a cell emptied by training is released slowly), thresholds it and dilates by one
    cell so a thin surface between sample points is not lost.
    """

    def __init__(self, resolution: int = 32, bound: float = 1.0, threshold: float = 0.01, decay: float = 0.95):
        super().__init__()
        self.resolution, self.bound, self.threshold, self.decay = resolution, float(bound), threshold, decay
        self.register_buffer("density", torch.zeros(resolution, resolution, resolution))
        self.register_buffer("mask", torch.ones(resolution, resolution, resolution, dtype=torch.bool))

    @torch.no_grad()
    def update(self, density_fn, chunk: int = 65536) -> None:
        r, b = self.resolution, self.bound
        dev = self.density.device
        edges = torch.linspace(-b, b, r + 1, device=dev)
        centres = 0.5 * (edges[1:] + edges[:-1])
        corner = torch.stack(torch.meshgrid(edges, edges, edges, indexing="ij"), -1).reshape(-1, 3)
        centre = torch.stack(torch.meshgrid(centres, centres, centres, indexing="ij"), -1).reshape(-1, 3)
        dc = torch.cat([density_fn(p) for p in corner.split(chunk)]).reshape(r + 1, r + 1, r + 1)
        dm = torch.cat([density_fn(p) for p in centre.split(chunk)]).reshape(r, r, r)
        corners_max = F.max_pool3d(dc[None, None], kernel_size=2, stride=1)[0, 0]       # (r, r, r)
        new = torch.maximum(corners_max, dm)
        self.density.copy_(torch.maximum(self.decay * self.density, new))
        occ = (self.density > self.threshold).float()
        self.mask.copy_(F.max_pool3d(occ[None, None], 3, stride=1, padding=1)[0, 0] > 0)

    def occupied(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., 3) world points (index order x, y, z) -> (...) bool."""
        idx = ((x + self.bound) / (2 * self.bound) * self.resolution).long().clamp(0, self.resolution - 1)
        return self.mask[idx[..., 0], idx[..., 1], idx[..., 2]]

    def fraction_occupied(self) -> float:
        return self.mask.float().mean().item()


def shade(albedo, normals, points, light_pos, shading: str, ambient: float):
    """Per-sample colour (M, 3) for a shading mode; light_pos (M, 3) is each sample's point light."""
    if shading == "albedo":
        return albedo
    light_dir = F.normalize(light_pos - points, dim=-1)
    diffuse = (normals * light_dir).sum(-1, keepdim=True).clamp(min=0.0)
    lum = ambient + (1.0 - ambient) * diffuse
    return lum.expand(-1, 3) if shading == "textureless" else albedo * lum


def render_rays(field, rays_o: torch.Tensor, rays_d: torch.Tensor, n_samples: int = 64,
                occupancy: OccupancyGrid | None = None, shading: str = "albedo", light_pos=None,
                ambient: float = 0.3, background: torch.Tensor | None = None, early_stop: float = 1e-4,
                chunk: int = 16, need_normals: bool | None = None, normal_method: str = "finite_difference",
                need_distortion: bool = False, generator: torch.Generator | None = None) -> dict:
    """Volume-render N rays.

    rays_o, rays_d: (N, 3), rays_d unit length. light_pos: (N, 3) or None. background: (N, 3) colours
    or None (black). early_stop < 0 never terminates a ray. Returns rgb (N, 3), opacity (N,), depth (N,) (expected distance; 0 where empty),
    normal (N, 3) (opacity-weighted, unit where the ray hits), orientation (N,) (orientation-loss
    terms), distortion (N,) (Mip-NeRF 360's loss, when need_distortion), n_evaluated (field evaluations
    made) and n_samples (N * S).
    """
    if shading not in SHADINGS:
        raise ValueError(f"shading must be one of {SHADINGS}, got {shading!r}")
    if need_normals is None:
        need_normals = shading != "albedo"
    if shading != "albedo" and light_pos is None:
        raise ValueError(f"shading {shading!r} needs light_pos")
    n, dev = rays_o.shape[0], rays_o.device
    near, far = ray_box(rays_o, rays_d, field.bound)
    u = (torch.rand(n, n_samples, generator=generator).to(dev) if generator is not None
         else torch.full((n, n_samples), 0.5, device=dev))
    steps = (torch.arange(n_samples, device=dev)[None] + u) / n_samples
    t = near[:, None] + (far - near)[:, None] * steps                                 # (N, S)
    delta = ((far - near) / n_samples)[:, None].expand(n, n_samples)

    trans = torch.ones(n, device=dev)
    rgb = torch.zeros(n, 3, device=dev)
    opacity = torch.zeros(n, device=dev)
    depth = torch.zeros(n, device=dev)
    normal = torch.zeros(n, 3, device=dev)
    orient = torch.zeros(n, device=dev)
    # running sums for the distortion loss across chunks: sum of w and of w*t over earlier samples
    w_before = torch.zeros(n, device=dev)
    wt_before = torch.zeros(n, device=dev)
    distortion = torch.zeros(n, device=dev)
    active = far > near
    n_eval = 0
    for c0 in range(0, n_samples, chunk):
        rays = active.nonzero().squeeze(-1)
        if rays.numel() == 0:
            break
        tc, dc = t[rays, c0:c0 + chunk], delta[rays, c0:c0 + chunk]                     # (A, K)
        pts = rays_o[rays, None] + rays_d[rays, None] * tc[..., None]                  # (A, K, 3)
        valid = occupancy.occupied(pts) if occupancy is not None else torch.ones_like(tc, dtype=torch.bool)
        vp = pts[valid]                                                                # (M, 3)
        n_eval += vp.shape[0]
        sigma_v, albedo_v = field(vp)
        sigma = torch.zeros_like(tc).masked_scatter(valid, sigma_v)
        alpha = 1.0 - torch.exp(-sigma * dc)
        # exclusive cumulative product of (1 - alpha), started from each ray's transmittance so far
        tr = trans[rays, None] * torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha], 1), 1)
        w = tr[:, :-1] * alpha                                                          # (A, K)
        wv = w[valid]
        ray_of = rays[:, None].expand_as(tc)[valid]                                     # (M,)
        nrm_v = density_normals(field.density, vp, normal_method) if need_normals and vp.shape[0] else None
        lp = light_pos[ray_of] if light_pos is not None else None
        col_v = shade(albedo_v, nrm_v, vp, lp, shading, ambient)
        rgb = rgb.index_add(0, ray_of, wv[:, None] * col_v)
        opacity = opacity.index_add(0, rays, w.sum(1))
        depth = depth.index_add(0, rays, (w * tc).sum(1))
        if nrm_v is not None:
            normal = normal.index_add(0, ray_of, wv[:, None] * nrm_v)
            facing_away = (nrm_v * rays_d[ray_of]).sum(-1).clamp(min=0.0) ** 2
            orient = orient.index_add(0, ray_of, wv.detach() * facing_away)
        if need_distortion:
            # Mip-NeRF 360: sum_ij w_i w_j |t_i - t_j| + 1/3 sum_i w_i^2 delta_i, the pair term as
            # 2 sum_j w_j (t_j W_<j - (wt)_<j) with prefix sums carried over from earlier chunks
            w_prev = w_before[rays, None] + torch.cumsum(w, 1) - w
            wt_prev = wt_before[rays, None] + torch.cumsum(w * tc, 1) - w * tc
            d = 2 * (w * (tc * w_prev - wt_prev)).sum(1) + (w.pow(2) * dc).sum(1) / 3
            distortion = distortion.index_add(0, rays, d)
            w_before = w_before.index_add(0, rays, w.sum(1))
            wt_before = wt_before.index_add(0, rays, (w * tc).sum(1))
        trans = trans.index_put((rays,), tr[:, -1])
        active = active & (trans > early_stop)
    if background is not None:
        rgb = rgb + (1.0 - opacity)[:, None] * background
    normal = F.normalize(normal, dim=-1, eps=1e-8)
    return {"rgb": rgb, "opacity": opacity, "depth": depth, "normal": normal, "orientation": orient,
            "distortion": distortion, "n_evaluated": n_eval, "n_samples": n * n_samples}


def sample_lights(cameras: Cameras, generator: torch.Generator | None = None, spread: float = 0.3,
                  distance_scale=(0.8, 1.5)) -> torch.Tensor:
    """A random point light near each camera (B, 3), as DreamFusion: the camera direction perturbed by
    Gaussian noise of std `spread`, at `distance_scale` times the camera distance."""
    b = len(cameras)
    d = F.normalize(cameras.position + spread * cameras.distance[:, None] * torch.randn(b, 3, generator=generator)
                    .to(cameras.position.device), dim=-1)
    lo, hi = distance_scale
    s = lo + (hi - lo) * torch.rand(b, generator=generator).to(cameras.position.device)
    return d * (s * cameras.distance)[:, None]


def render(field, cameras: Cameras, resolution: int, background=None, shading: str = "albedo",
           light_pos: torch.Tensor | None = None, ray_chunk: int = 16384, **kw) -> dict:
    """Render B images. background: a module called on (N, 3) directions, a (3,) colour, or None.
    light_pos: (B, 3) or None. Returns rgb (B, H, W, 3), opacity/depth (B, H, W), normal (B, H, W, 3),
    orientation (B, H, W), and the sample counters."""
    b, h = len(cameras), resolution
    rays_o, rays_d = get_rays(cameras, h, h)
    rays_o, rays_d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
    image_index = torch.arange(b, device=rays_o.device).repeat_interleave(h * h)
    if background is None:
        bg = None
    elif isinstance(background, nn.Module):
        bg = background(rays_d, image_index=image_index, n_images=b)
    else:
        bg = torch.as_tensor(background, dtype=torch.float32, device=rays_o.device).expand(len(rays_d), 3)
    lp = light_pos[image_index] if light_pos is not None else None
    parts = []
    for s in range(0, len(rays_o), ray_chunk):
        sl = slice(s, s + ray_chunk)
        parts.append(render_rays(field, rays_o[sl], rays_d[sl], shading=shading,
                                 light_pos=None if lp is None else lp[sl],
                                 background=None if bg is None else bg[sl], **kw))
    out = {}
    for k in ("rgb", "opacity", "depth", "normal", "orientation"):
        v = torch.cat([p[k] for p in parts])
        out[k] = v.reshape(b, h, h, *v.shape[1:])
    out["n_evaluated"] = sum(p["n_evaluated"] for p in parts)
    out["n_samples"] = sum(p["n_samples"] for p in parts)
    return out


# -- regularisers --------------------------------------------------------------------------------
def orientation_loss(out: dict) -> torch.Tensor:
    """DreamFusion's orientation penalty, averaged over rays that see something."""
    hit = (out["opacity"].detach() > 1e-3).float()
    return (out["orientation"] * hit).sum() / hit.sum().clamp(min=1.0)


def opacity_entropy(opacity: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Mean binary entropy of the opacity (in nats): pushes every ray to be fully empty or fully solid."""
    o = opacity.clamp(eps, 1.0 - eps)
    return -(o * torch.log(o) + (1.0 - o) * torch.log(1.0 - o)).mean()


def opacity_sparsity(opacity: torch.Tensor) -> torch.Tensor:
    """Mean smoothed |opacity| (sqrt(o^2 + 0.01)): fewer, smaller floaters."""
    return torch.sqrt(opacity ** 2 + 0.01).mean()


def max_optical_depth_error(threshold: float, bound: float) -> float:
    """Largest opacity change the occupancy grid can cause for a density that really is below
    `threshold` in every skipped cell: a ray crosses at most the box diagonal."""
    return 1.0 - math.exp(-threshold * 2.0 * math.sqrt(3.0) * bound)
