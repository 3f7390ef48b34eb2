"""Text to coloured mesh: score distillation of a radiance field through an image prior.

    asset = generate("a red cube")                 # the shipped prior, default settings (CPU: ~3 min)
    asset.save("cube.glb"); asset.turntable("cube.gif")
    field, mesh = asset                            # the radiance field and the trimesh mesh

Each iteration renders `batch` random views of the field (cameras in the ranges the prior's training
views were drawn from), shaded like those views (Lambertian, a light above and right of the camera, on
a white background), and pulls them towards the prior with SDS (threed.sds.score_distillation), each
view conditioned on the prompt with its view word ("a red cube, back view"). The timestep range is
annealed from (t_min, t_max) towards (t_min, t_max_end) with the square root of progress: large t
early forms the coarse shape, small t late refines colour and edges. An opacity-entropy term pushes
every ray to be empty or solid, so the automatic surface rule of threed.mesh finds a clean surface.

Shading is deferred (`deferred_lambertian`): the field is rendered as albedo, depth and opacity, and the
Lambertian light is applied in image space with normals from the depth map. Per-sample normals from
density differences cost about six times the render on a CPU; depth-map normals always face the camera,
so DreamFusion's orientation loss (which penalises per-sample normals facing away) has nothing to do.

The prior may be ours (threed.prior) or a diffusers Stable Diffusion folder (threed.sd_prior); images are
rendered at the prior's own resolution when it has one (`prior.resolution`), else at `resolution`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from dataclasses import field as dc_field

import torch
import torch.nn.functional as F

from .cameras import get_rays, orbit_cameras, sample_cameras, view_prompts
from .field import RadianceField
from .io import check_output_file
from .mesh import PREVIEW_SUFFIXES, export_mesh, extract_mesh, write_frames
from .metrics import default_lights
from .render import OccupancyGrid, opacity_entropy, render
from .sds import check_prompts, score_distillation

WHITE = (1.0, 1.0, 1.0)


@dataclass
class Settings:
    """Every knob of one generation; the defaults make one asset in a few minutes on a 2-core CPU."""

    iters: int = 600
    batch: int = 4                     # views rendered per iteration
    resolution: int = 32               # render size when the prior does not fix one
    n_samples: int = 32                # samples per ray
    lr: float = 0.02
    cfg_scale: float = 7.5             # "uncond" form: eps_u + s (eps_c - eps_u)
    weighting: str = "sds"
    t_range: tuple = (0.02, 0.98)
    t_max_end: float = 0.5
    anneal: str = "sqrt"
    entropy_weight: float = 0.002
    mesh_resolution: int = 64
    field_resolutions: tuple = (16, 32, 48)
    ambient: float = 0.35              # as the prior's training renders
    negative_prompt: str = ""          # "" = the prior's unconditional branch


@dataclass
class Asset:
    """The result of `generate`: the field, its mesh and what it took. Unpacks as (field, mesh)."""

    prompt: str
    field: RadianceField
    mesh: object                       # trimesh.Trimesh
    stats: dict = dc_field(default_factory=dict)

    def __iter__(self):
        return iter((self.field, self.mesh))

    def save(self, path):
        """Write the mesh (.glb / .obj / .ply, vertex colours) atomically; returns the path."""
        return export_mesh(self.mesh, path)

    def turntable(self, path, n_frames: int = 12, resolution: int = 96):
        """A turntable preview of the field (.gif or a .png grid), shaded as in training."""
        check_output_file(path, PREVIEW_SUFFIXES)
        return write_frames(turntable_frames(self.field, n_frames, resolution), path)


@torch.no_grad()
def turntable_frames(field, n_frames: int = 12, resolution: int = 96, elevation: float = 20.0,
                     distance: float = 2.0, fov: float = 47.5, n_samples: int = 64) -> torch.Tensor:
    """(F, H, W, 3) frames of the field going round, in the prior's shading (deferred Lambertian, light
    above and right of the camera, white ground), with an occupancy grid to skip empty space."""
    cams = orbit_cameras(n_frames, elevation, distance, fov)
    dev = next(field.parameters()).device if hasattr(field, "parameters") else torch.device("cpu")
    cams = cams.to(dev)
    occupancy = OccupancyGrid(32, field.bound).to(dev)
    occupancy.update(field.density)
    frames = []
    for i in range(n_frames):          # a frame at a time: memory stays flat at any resolution
        out = render(field, cams[i], resolution, background=None, shading="albedo", n_samples=n_samples,
                     occupancy=occupancy)
        frames.append(deferred_lambertian(out, cams[i], default_lights(cams[i]), Settings.ambient))
    return torch.cat(frames)


def deferred_lambertian(out: dict, cams, light_pos: torch.Tensor, ambient: float, background=WHITE):
    """Lambertian images (B, H, W, 3) from an albedo render: normals from the rendered depth map.

    out: `render(..., shading="albedo", background=None)` (albedo accumulated over black), cameras and
    lights (B, 3). Each pixel's surface point is its ray at the expected depth (depth / opacity); the
    normal is the cross product of that point map's central differences, turned towards the camera.
    Where a neighbour is mostly empty (silhouettes) the normal is the view direction (full light).
    Differentiable through depth and opacity, so shading still moves the geometry, at the cost of an
    albedo render: finite-difference normals per sample cost ~6 extra field evaluations each.
    """
    _b, h, w = out["opacity"].shape
    rays_o, rays_d = get_rays(cams, h, w)                                         # (B, H, W, 3)
    opacity = out["opacity"]
    t = out["depth"] / opacity.clamp(min=1e-3)
    pts = rays_o + rays_d * t[..., None]
    pad = F.pad(pts.permute(0, 3, 1, 2), (1, 1, 1, 1), mode="replicate").permute(0, 2, 3, 1)
    d_x = pad[:, 1:-1, 2:] - pad[:, 1:-1, :-2]
    d_y = pad[:, 2:, 1:-1] - pad[:, :-2, 1:-1]
    normal = F.normalize(torch.linalg.cross(d_x, d_y, dim=-1), dim=-1, eps=1e-8)
    normal = torch.where(((normal * rays_d).sum(-1, keepdim=True) > 0), -normal, normal)
    o_pad = F.pad(opacity[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    solid = torch.stack([o_pad[:, 1:-1, 2:], o_pad[:, 1:-1, :-2], o_pad[:, 2:, 1:-1], o_pad[:, :-2, 1:-1]]).amin(0)
    normal = torch.where((solid > 0.5)[..., None], normal, -rays_d)
    light_dir = F.normalize(light_pos[:, None, None, :] - pts, dim=-1)
    lum = ambient + (1.0 - ambient) * (normal * light_dir).sum(-1, keepdim=True).clamp(min=0.0)
    bg = torch.as_tensor(background, dtype=pts.dtype, device=pts.device)
    return out["rgb"] * lum + (1.0 - opacity)[..., None] * bg


def _resolve_prior(prior, device):
    if prior is None or isinstance(prior, (str, bytes)) or hasattr(prior, "__fspath__"):
        from .prior import load_prior

        return load_prior(prior, device)
    return prior


def generate(prompt: str, *, prior=None, settings: Settings | None = None, seed: int = 0, device="cpu",
             progress_bar: bool = True, callback=None, **overrides) -> Asset:
    """Distil `prompt` into a radiance field and mesh it.

    prior: None (the shipped prior), a folder (ours or diffusers), or an `ImagePrior` object.
    settings / overrides: a `Settings`, with keyword overrides of its fields (iters=, cfg_scale=, ...).
    callback(step, info) is called every iteration with the losses (for tests and notebooks).
    """
    (prompt,) = check_prompts([prompt])
    s = settings or Settings()
    if overrides:
        unknown = set(overrides) - set(Settings.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown generate settings {sorted(unknown)}; see polydiff.threed.generate.Settings")
        s = Settings(**{**s.__dict__, **overrides})
    if s.iters < 0 or s.batch < 1:
        raise ValueError(f"iters must be >= 0 and batch >= 1, got iters={s.iters}, batch={s.batch}")
    device = torch.device(device)
    prior = _resolve_prior(prior, device)
    res = int(getattr(prior, "resolution", None) or s.resolution)

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    fld = RadianceField(resolutions=tuple(s.field_resolutions)).to(device)
    occupancy = OccupancyGrid(32, fld.bound).to(device)
    opt = torch.optim.Adam(fld.parameters(), lr=s.lr, betas=(0.9, 0.99), eps=1e-15)

    text_cache: dict[tuple, object] = {}

    def embed(prompts: list[str]):
        # a batch has at most 4 view words, so few distinct batches: encode each once
        key = tuple(prompts)
        if key not in text_cache:
            text_cache[key] = prior.encode_text(list(prompts))
        return text_cache[key]

    def unconditional(n: int):
        # "" is the unconditional prompt (the null condition of ours, Stable Diffusion's own habit); a
        # prior that refuses blank text gets no guidance (eps_hat = eps_c)
        if s.negative_prompt.strip() or s.cfg_scale == 1.0:
            return embed([s.negative_prompt] * n) if s.negative_prompt.strip() else None
        try:
            return embed([""] * n)
        except ValueError:
            return None

    t0 = time.perf_counter()
    steps = range(s.iters)
    bar = None
    if progress_bar:
        from polydiff.core.progress import progress

        steps = bar = progress(steps, desc="sds", total=s.iters)
    loss_value = float("nan")
    for it in steps:
        if it % 16 == 0:
            occupancy.update(fld.density)
        cams = sample_cameras(s.batch, elevation_range=(-10.0, 70.0), distance_range=(1.8, 2.2),
                              fov_range=(45.0, 50.0), generator=g).to(device)
        out = render(fld, cams, res, background=None, shading="albedo", n_samples=s.n_samples,
                     occupancy=occupancy, generator=g)
        images = deferred_lambertian(out, cams, default_lights(cams), s.ambient).permute(0, 3, 1, 2)  # (B, 3, R, R)
        cond = embed(view_prompts(prompt, cams))
        uncond = unconditional(s.batch)
        sds, info = score_distillation(prior, images, cond, uncond, cfg_scale=s.cfg_scale, weighting=s.weighting,
                                       t_range=tuple(s.t_range), step=it, total_steps=s.iters, anneal=s.anneal,
                                       t_max_end=s.t_max_end, generator=g)
        sds = sds / s.batch
        entropy = opacity_entropy(out["opacity"])
        loss = sds + s.entropy_weight * entropy
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_value = float(loss.detach())
        if bar is not None:
            bar.set_postfix(loss=f"{loss_value:.3f}", t=int(info["t"].float().mean()), refresh=False)
        if callback is not None:
            callback(it, {"loss": loss_value, "sds": float(sds.detach()), "entropy": float(entropy.detach()), "t": info["t"]})
    if bar is not None:
        bar.close()
    fld.eval()
    seconds = time.perf_counter() - t0
    mesh, level = extract_mesh(fld, s.mesh_resolution)
    stats = {"iters": s.iters, "resolution": res, "seconds_sds": seconds,
             "seconds_total": time.perf_counter() - t0, "final_loss": loss_value, "level": level,
             "faces": len(mesh.faces), "watertight": bool(mesh.is_watertight)}
    return Asset(prompt, fld, mesh, stats)
