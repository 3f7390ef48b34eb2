"""Cameras on a sphere around the origin, their per-pixel rays, and view-dependent prompt words.

Conventions (OpenGL-style, +Y up):
- a camera at elevation `el`, azimuth `az` (degrees) and distance `d` sits at
  `d * (cos(el) sin(az), sin(el), cos(el) cos(az))` and looks at the origin;
  azimuth 0 puts the camera on +Z, facing the object's front.
- the camera-to-world rotation `R` has columns (right, up, back): the camera looks along -back.
- `fov` is the vertical field of view in degrees; pixels are square.

View words follow DreamFusion: "overhead" above an elevation threshold, else "front" / "side" /
"back" by the azimuth's distance from 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class Cameras:
    """A batch of B pinhole cameras. All tensors have leading dimension B."""

    position: torch.Tensor   # (B, 3) world position
    rotation: torch.Tensor   # (B, 3, 3) camera-to-world, columns (right, up, back)
    fov: torch.Tensor        # (B,) vertical field of view, degrees
    elevation: torch.Tensor  # (B,) degrees
    azimuth: torch.Tensor    # (B,) degrees, in (-180, 180]
    distance: torch.Tensor   # (B,)

    def __len__(self) -> int:
        return self.position.shape[0]

    def __getitem__(self, idx) -> Cameras:
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return Cameras(*(getattr(self, f)[idx] for f in
                         ("position", "rotation", "fov", "elevation", "azimuth", "distance")))

    def to(self, device) -> Cameras:
        return Cameras(*(getattr(self, f).to(device) for f in
                         ("position", "rotation", "fov", "elevation", "azimuth", "distance")))


def look_at(eye: torch.Tensor, target: torch.Tensor | None = None, up=(0.0, 1.0, 0.0)) -> torch.Tensor:
    """Camera-to-world rotation (B, 3, 3) with columns (right, up, back) for cameras at `eye` (B, 3)."""
    if target is None:
        target = torch.zeros_like(eye)
    back = torch.nn.functional.normalize(eye - target, dim=-1)
    up_w = torch.as_tensor(up, dtype=eye.dtype, device=eye.device).expand_as(eye)
    right = torch.linalg.cross(up_w, back, dim=-1)
    # Straight above or below, world-up is parallel to the view: any right vector orthogonal to it will do.
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    right = torch.where(degenerate, torch.tensor([1.0, 0.0, 0.0], dtype=eye.dtype, device=eye.device), right)
    right = torch.nn.functional.normalize(right, dim=-1)
    cam_up = torch.linalg.cross(back, right, dim=-1)
    return torch.stack([right, cam_up, back], dim=-1)


def spherical_position(elevation, azimuth, distance) -> torch.Tensor:
    """(B,) degrees, degrees, length -> (B, 3) positions on the sphere."""
    el, az = torch.deg2rad(elevation), torch.deg2rad(azimuth)
    return torch.stack([distance * torch.cos(el) * torch.sin(az),
                        distance * torch.sin(el),
                        distance * torch.cos(el) * torch.cos(az)], dim=-1)


def make_cameras(elevation, azimuth, distance, fov) -> Cameras:
    """Cameras from (B,) tensors (or numbers) of elevation, azimuth (degrees), distance and fov."""
    el, az, dist, fov = torch.broadcast_tensors(*(torch.as_tensor(v, dtype=torch.float32).reshape(-1)
                                                  for v in (elevation, azimuth, distance, fov)))
    az = torch.remainder(az + 180.0, 360.0) - 180.0
    az = torch.where(az == -180.0, torch.full_like(az, 180.0), az)
    pos = spherical_position(el, az, dist)
    return Cameras(pos, look_at(pos), fov.clone(), el.clone(), az, dist.clone())


def sample_cameras(n: int, elevation_range=(-10.0, 60.0), azimuth_range=(-180.0, 180.0),
                   distance_range=(1.6, 2.2), fov_range=(40.0, 60.0),
                   generator: torch.Generator | None = None) -> Cameras:
    """`n` random cameras, each range sampled uniformly (elevation uniform in degrees, as DreamFusion)."""
    def uniform(lo_hi):
        lo, hi = lo_hi
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    return make_cameras(uniform(elevation_range), uniform(azimuth_range), uniform(distance_range),
                        uniform(fov_range))


def orbit_cameras(n: int, elevation: float = 20.0, distance: float = 2.0, fov: float = 50.0) -> Cameras:
    """`n` cameras evenly spaced in azimuth (a turntable), starting at the front."""
    az = torch.arange(n, dtype=torch.float32) * (360.0 / n)
    return make_cameras(elevation, az, distance, fov)


def get_rays(cameras: Cameras, height: int, width: int | None = None):
    """Per-pixel rays through pixel centres.

    Returns origins (B, H, W, 3) and unit directions (B, H, W, 3); row 0 is the top of the image.
    """
    width = width or height
    dev = cameras.position.device
    focal = 0.5 * height / torch.tan(0.5 * torch.deg2rad(cameras.fov))                # (B,)
    j = torch.arange(height, dtype=torch.float32, device=dev) + 0.5
    i = torch.arange(width, dtype=torch.float32, device=dev) + 0.5
    jj, ii = torch.meshgrid(j, i, indexing="ij")                                      # (H, W)
    x = (ii - 0.5 * width)[None] / focal[:, None, None]                               # (B, H, W)
    y = -(jj - 0.5 * height)[None] / focal[:, None, None]
    dirs_cam = torch.stack([x, y, -torch.ones_like(x)], dim=-1)                       # (B, H, W, 3)
    dirs = torch.einsum("bij,bhwj->bhwi", cameras.rotation, dirs_cam)
    dirs = torch.nn.functional.normalize(dirs, dim=-1)
    origins = cameras.position[:, None, None, :].expand_as(dirs)
    return origins, dirs


# -- view-dependent prompts --------------------------------------------------------------------
VIEWS = ("front", "side", "back", "overhead")


def view_names(elevation, azimuth, overhead_threshold: float = 60.0, front_half_width: float = 45.0,
               back_half_width: float = 45.0) -> list[str]:
    """DreamFusion's view classes: overhead above `overhead_threshold` degrees of elevation; else front
    within `front_half_width` of azimuth 0, back within `back_half_width` of 180, side otherwise."""
    el = torch.as_tensor(elevation, dtype=torch.float32).reshape(-1)
    az = torch.as_tensor(azimuth, dtype=torch.float32).reshape(-1)
    el, az = torch.broadcast_tensors(el, az)
    az = torch.remainder(az + 180.0, 360.0) - 180.0                                   # (-180, 180]
    out = []
    for e, a in zip(el.tolist(), az.tolist()):
        if e > overhead_threshold:
            out.append("overhead")
        elif abs(a) <= front_half_width:
            out.append("front")
        elif abs(a) >= 180.0 - back_half_width:
            out.append("back")
        else:
            out.append("side")
    return out


def view_prompts(prompt: str, cameras: Cameras, template: str = "{prompt}, {view} view", **kw) -> list[str]:
    """One prompt per camera with its view word appended, e.g. "a red cube, back view"."""
    return [template.format(prompt=prompt, view=v) for v in view_names(cameras.elevation, cameras.azimuth, **kw)]


def fov_for_extent(radius: float, distance: float, margin: float = 1.1) -> float:
    """The vertical fov (degrees) that just frames a sphere of `radius` seen from `distance`."""
    return math.degrees(2.0 * math.asin(min(1.0, margin * radius / distance)))
