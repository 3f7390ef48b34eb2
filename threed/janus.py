"""The Janus check: does the generated object have the prompt's shape from every side?

Score distillation judges each render on its own, so a field can look right from the front and be
wrong behind it: a second copy of the object stuck to its back (the "Janus" multi-face failure), a
flat cut-out facing the front camera, or a shape that changes as the camera goes round. In the
primitive world the true shape is known, so each side can be checked against it.

`janus_score(field, scene)` renders silhouettes (opacity) of the field and of the true scene from the
same cameras, front, back and both sides (azimuth 0, 180, +90, -90 at a small elevation, so the back
view is not merely the front one mirrored), and compares them view by view:

- each silhouette is normalised in 2D: centred on its centroid and scaled so its r.m.s. radius
  (sqrt of the mean squared distance of its coverage from the centroid) is 1, the 2D analogue of
  threed.metrics' volume normalisation. SDS fixes neither the object's size nor its position, and the
  projection of a translated, scaled object is (up to perspective) a translated, scaled silhouette;
- the two normalised silhouettes are compared by soft IoU, sum(min(a, b)) / sum(max(a, b)) over the
  coverage in [0, 1] (equal to the usual IoU for binary masks, and fair to anti-aliased edges and
  semi-transparent haze alike).

A view fails when its IoU is below `threshold`; the check passes when no view fails, and
`front_back_ok` says whether the front and back views both agree with the prompt's shape.

Why 0.75. Measured with `python -m polydiff.threed.janus [--ceiling]` (64 px, the default views; the
primitives look alike from all four sides, each being symmetric under a quarter turn about +Y):
- the right shape: exact fields (`SDFField`) of each primitive score 0.94 (pyramid) to 0.98 (sphere)
  in every view; a field fitted to renders of a cone (threed.metrics.fit_ceiling, 120 steps) 0.92-0.94;
- a different primitive: 0.40 (torus vs capsule) to 0.89 (pyramid vs cone), median 0.65 per view
  (silhouettes cannot tell every pair apart: cube vs sphere is 0.83, a circle against a square of the
  same r.m.s. radius being 0.824 in closed form); the untrained field's central ball vs a cone 0.63;
- Janus failures of a cone: a second cone behind the first 0.94 front and back but 0.42 from the sides;
  a flat cut-out facing the front camera 0.86 front and back, 0.24 from the sides.
0.75 lies below every right-shape view, with room for the blur of a fitted or distilled field, and above
the typical wrong-shape view and every Janus side view measured. It flags views that are clearly not
the prompt's shape; telling a cube from a sphere is left to the 3D IoU and Chamfer of threed.metrics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .cameras import make_cameras
from .primitives import Scene, render_scene
from .render import render

# (name, elevation, azimuth) in degrees; azimuth 0 is the object's front (the +Z side)
VIEWS = (("front", 15.0, 0.0), ("side +90", 15.0, 90.0), ("back", 15.0, 180.0), ("side -90", 15.0, -90.0))
THRESHOLD = 0.75
EXTENT = 2.5        # half-width of the normalised frame, in r.m.s. radii (a thin bar's ends sit at 1.73)


def silhouette_moments(masks: torch.Tensor):
    """masks (B, H, W) coverage in [0, 1] -> centroid (B, 2) as (x, y) in pixels (pixel centres at
    i + 0.5), r.m.s. radius (B,) in pixels, total coverage (B,)."""
    h, w = masks.shape[-2:]
    ys = torch.arange(h, dtype=masks.dtype, device=masks.device) + 0.5
    xs = torch.arange(w, dtype=masks.dtype, device=masks.device) + 0.5
    mass = masks.sum((1, 2))
    m = mass.clamp(min=1e-8)
    cx = (masks.sum(1) * xs).sum(1) / m
    cy = (masks.sum(2) * ys).sum(1) / m
    r2 = (masks * ((xs[None, None, :] - cx[:, None, None]) ** 2 + (ys[None, :, None] - cy[:, None, None]) ** 2)
          ).sum((1, 2)) / m
    return torch.stack([cx, cy], -1), r2.sqrt(), mass


def normalise_silhouettes(masks: torch.Tensor, size: int, extent: float = EXTENT) -> torch.Tensor:
    """Resample masks (B, H, W) onto a size x size frame covering [-extent, extent]^2 r.m.s. radii around
    each mask's centroid (bilinear; outside the image is empty). An empty mask stays empty."""
    h, w = masks.shape[-2:]
    centre, rms, mass = silhouette_moments(masks)
    u = torch.linspace(-extent, extent, size, dtype=masks.dtype, device=masks.device)
    vv, uu = torch.meshgrid(u, u, indexing="ij")                                 # (S, S): rows are y
    px = centre[:, 0, None, None] + uu[None] * rms[:, None, None]                # (B, S, S) pixels
    py = centre[:, 1, None, None] + vv[None] * rms[:, None, None]
    grid = torch.stack([px / w * 2.0 - 1.0, py / h * 2.0 - 1.0], -1)             # grid_sample's [-1, 1]
    out = F.grid_sample(masks[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]
    return torch.where((mass > 0.5)[:, None, None], out, torch.zeros_like(out))


def soft_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, H, W) coverages in [0, 1] -> (B,) sum(min) / sum(max); 0 when both are empty."""
    inter = torch.minimum(a, b).sum((1, 2))
    union = torch.maximum(a, b).sum((1, 2))
    return torch.where(union > 0, inter / union.clamp(min=1e-8), torch.zeros_like(union))


def view_cameras(views=VIEWS, distance: float = 2.0, fov: float = 50.0):
    """Cameras for (name, elevation, azimuth) views, all looking at the origin."""
    return make_cameras([v[1] for v in views], [v[2] for v in views], distance, fov)


@torch.no_grad()
def field_silhouettes(field, cameras, resolution: int, n_samples: int = 64) -> torch.Tensor:
    """Opacity (B, H, W) of a radiance field (anything `threed.render.render` takes) from `cameras`."""
    params = list(field.parameters()) if hasattr(field, "parameters") else []
    dev = params[0].device if params else torch.device("cpu")
    out = render(field, cameras.to(dev), resolution, background=None, shading="albedo", n_samples=n_samples)
    return out["opacity"].float().cpu().clamp(0.0, 1.0)


def true_silhouettes(scene: Scene, cameras, resolution: int, supersample: int = 2) -> torch.Tensor:
    """Coverage (B, H, W) of the true scene, sphere-traced (threed.primitives), anti-aliased."""
    return render_scene(scene, cameras.to("cpu"), resolution, shading="albedo", supersample=supersample)["mask"]


def compare_silhouettes(pred: torch.Tensor, true: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """(B, H, W) pairs of silhouettes -> (B,) soft IoU after each is normalised in centre and scale."""
    size = size or pred.shape[-1]
    return soft_iou(normalise_silhouettes(pred, size), normalise_silhouettes(true, size))


def janus_score(field, scene: Scene, *, resolution: int = 64, views=VIEWS, threshold: float = THRESHOLD,
                distance: float = 2.0, fov: float = 50.0, n_samples: int = 64) -> dict:
    """Per-view silhouette agreement of `field` with the true `scene` (see the module docstring).

    Returns {"iou": {view: IoU}, "mean_iou", "min_iou", "failed_views": [names below threshold],
    "front_back_ok": front and back both >= threshold (True when the views lack one of them),
    "passed": no view failed, "threshold"}.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    views = tuple(views)
    if not views:
        raise ValueError("views must name at least one (name, elevation, azimuth)")
    cams = view_cameras(views, distance, fov)
    ious = compare_silhouettes(field_silhouettes(field, cams, resolution, n_samples),
                               true_silhouettes(scene, cams, resolution))
    per_view = {name: float(v) for (name, _, _), v in zip(views, ious)}
    failed = [name for name, v in per_view.items() if v < threshold]
    return {"iou": per_view, "mean_iou": float(ious.mean()), "min_iou": float(ious.min()),
            "failed_views": failed, "front_back_ok": not ({"front", "back"} & set(failed)),
            "passed": not failed, "threshold": threshold}


class SDFField(torch.nn.Module):
    """A radiance field with the true shape: density `density` inside `sdf_fn` (smoothed over `width`),
    the scene's colours. The exact answer a generated field is measured against, in the renderer's
    own terms (and what the tests and the measurements in the module docstring use)."""

    def __init__(self, sdf_fn, color_fn=None, density: float = 60.0, width: float = 0.01, bound: float = 1.0):
        super().__init__()
        self.sdf_fn, self.color_fn = sdf_fn, color_fn
        self.peak, self.width, self.bound = density, width, bound

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self.peak * torch.sigmoid(-self.sdf_fn(x) / self.width)

    def forward(self, x: torch.Tensor):
        albedo = self.color_fn(x) if self.color_fn is not None else torch.full_like(x, 0.5)
        return self.density(x), albedo


def confusion_table(resolution: int = 64) -> tuple[list[str], torch.Tensor]:
    """IoU[i, j, v]: an exact field of primitive i against true primitive j, view v (the threshold's data)."""
    from .primitives import SHAPES, single

    cams = view_cameras()
    true = torch.stack([true_silhouettes(single(s, "red"), cams, resolution) for s in SHAPES])   # (P, V, H, W)
    table = torch.zeros(len(SHAPES), len(SHAPES), len(VIEWS))
    for i, s in enumerate(SHAPES):
        scene = single(s, "red")
        pred = field_silhouettes(SDFField(scene.sdf, scene.color), cams, resolution)
        for j in range(len(SHAPES)):
            table[i, j] = compare_silhouettes(pred, true[j])
    return list(SHAPES), table


def _janus_cases(resolution: int = 64) -> dict:
    """Janus failures of a cone, built exactly: a second copy behind it, and a flat cut-out."""
    from .primitives import single

    scene = single("cone", "red")
    off, s = torch.tensor([0.0, 0.0, 0.3]), 0.7
    two = SDFField(lambda x: torch.minimum(scene.sdf((x - off) / s), scene.sdf((x + off) / s)) * s)
    card = SDFField(lambda x: torch.maximum(scene.sdf(x), x[:, 2].abs() - 0.03))
    return {name: janus_score(f, scene, resolution=resolution)["iou"]
            for name, f in (("two cones back to back", two), ("flat cut-out", card))}


if __name__ == "__main__":
    import sys

    shapes, table = confusion_table()
    names = [v[0] for v in VIEWS]
    print("right shape (field i = truth i), per view:", ", ".join(names))
    for i, s in enumerate(shapes):
        print(f"  {s:9s}", " ".join(f"{v:.3f}" for v in table[i, i].tolist()))
    off = table[~torch.eye(len(shapes), dtype=torch.bool)]                      # (P * (P - 1), V)
    print(f"wrong shape, per view: min {off.min():.3f}  median {off.median():.3f}  max {off.max():.3f}")
    for i, s in enumerate(shapes):
        row = [f"{shapes[j]} {table[i, j].min():.2f}-{table[i, j].max():.2f}" for j in range(len(shapes)) if j != i]
        print(f"  field {s:9s} vs", ", ".join(row))
    for case, ious in _janus_cases().items():
        print(f"cone, {case}:", ", ".join(f"{k} {v:.3f}" for k, v in ious.items()))
    if "--ceiling" in sys.argv:   # minutes on a CPU
        from .metrics import fit_ceiling
        from .primitives import single

        for it in (0, 120):
            fitted = fit_ceiling(single("cone", "red"), iters=it)[0]
            ious = janus_score(fitted, single("cone", "red"))["iou"]
            print(f"cone, field fitted for {it} steps:", ", ".join(f"{k} {v:.3f}" for k, v in ious.items()))
