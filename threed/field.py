"""A radiance field in pure PyTorch: multi-resolution dense feature grids + a small MLP.

The scene lives in the cube [-bound, bound]^3. Each level is a dense grid of `features` channels
sampled trilinearly (`grid_sample`); the concatenated features go through a small MLP that predicts a
raw density and an albedo. This is the hash-grid idea (Instant-NGP) without the hashing: at the
resolutions a CPU can afford (<= 64^3) a dense grid fits in memory and needs no collision handling.

- density = activation(raw + blob(x)); `softplus` (default) or `exp` (clamped exp, as trunc_exp).
  The blob is DreamFusion/Magic3D's density bias, `blob_density * (1 - |x| / blob_radius)`, which starts
  optimisation from a ball at the centre rather than from empty space.
  `density_scale` multiplies the activated density: a surface sharp at the grid's resolution needs an
  optical depth of several per voxel, which a scale of ~10 reaches without huge raw outputs.
- albedo = sigmoid(raw albedo), in [0, 1].
- normals = -grad(density) / |grad(density)|, by central differences (default; no double backward
  needed, so it is cheap to train through) or by autograd.

`Background` paints the colour a ray sees when it leaves the scene: a small MLP on the ray direction,
a constant colour, or a random colour per image (DreamFusion's trick against a background that
"explains" the object).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from polydiff.core.checkpoint import ModelMixin
from torch import nn


def trunc_exp(x: torch.Tensor, max_value: float = 15.0) -> torch.Tensor:
    """exp with the input clamped, so a large raw density cannot overflow or explode its gradient."""
    return torch.exp(x.clamp(max=max_value))


class RadianceField(ModelMixin):
    def __init__(self, bound: float = 1.0, resolutions=(16, 32, 64), features: int = 4, hidden: int = 32,
                 density_activation: str = "softplus", blob_density: float = 10.0, blob_radius: float = 0.5,
                 density_scale: float = 1.0, init_scale: float = 0.1):
        super().__init__()
        if density_activation not in ("softplus", "exp"):
            raise ValueError(f"density_activation must be 'softplus' or 'exp', got {density_activation!r}")
        self.bound = float(bound)
        self.density_activation = density_activation
        self.blob_density = float(blob_density)
        self.blob_radius = float(blob_radius)
        self.density_scale = float(density_scale)
        # grid_sample wants (N, C, D, H, W); index order in the grid is (z, y, x) for coords (x, y, z).
        self.grids = nn.ParameterList(
            [nn.Parameter(init_scale * torch.randn(1, features, r, r, r)) for r in resolutions])
        self.mlp = nn.Sequential(nn.Linear(features * len(resolutions), hidden), nn.SiLU(),
                                 nn.Linear(hidden, 4))

    # -- raw outputs --------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3) world points -> (N, features * levels)."""
        u = (x / self.bound).clamp(-1.0, 1.0).reshape(1, -1, 1, 1, 3)
        feats = [F.grid_sample(g, u, mode="bilinear", align_corners=True).reshape(g.shape[1], -1)
                 for g in self.grids]
        return torch.cat(feats, dim=0).t()

    def blob(self, x: torch.Tensor) -> torch.Tensor:
        """The density bias at x: (N, 3) -> (N,)."""
        return self.blob_density * (1.0 - x.norm(dim=-1) / self.blob_radius)

    def activate_density(self, raw: torch.Tensor) -> torch.Tensor:
        act = F.softplus(raw) if self.density_activation == "softplus" else trunc_exp(raw)
        return self.density_scale * act

    def forward(self, x: torch.Tensor):
        """x: (N, 3) -> density (N,) >= 0, albedo (N, 3) in [0, 1]. Zero density outside the box."""
        out = self.mlp(self.encode(x))
        density = self.activate_density(out[:, 0] + self.blob(x))
        inside = (x.abs() <= self.bound).all(dim=-1)
        density = torch.where(inside, density, torch.zeros_like(density))
        return density, torch.sigmoid(out[:, 1:])

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)[0]

    def albedo(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)[1]


def density_normals(density_fn, x: torch.Tensor, method: str = "finite_difference", eps: float = 1e-2):
    """Unit normals -grad(density)/|grad(density)| at x: (N, 3) -> (N, 3).

    `finite_difference` uses central differences of step `eps` (6 extra evaluations, differentiable
    without double backward); `autograd` differentiates the density exactly.
    """
    if method == "finite_difference":
        offsets = eps * torch.eye(3, dtype=x.dtype, device=x.device)                   # (3, 3)
        pts = torch.cat([x[:, None, :] + offsets, x[:, None, :] - offsets], dim=1)    # (N, 6, 3)
        d = density_fn(pts.reshape(-1, 3)).reshape(-1, 6)
        grad = (d[:, :3] - d[:, 3:]) / (2.0 * eps)
    elif method == "autograd":
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True) if not x.requires_grad else x
            d = density_fn(xg)
            (grad,) = torch.autograd.grad(d.sum(), xg, create_graph=torch.is_grad_enabled())
    else:
        raise ValueError(f"normal method must be 'finite_difference' or 'autograd', got {method!r}")
    return -F.normalize(grad, dim=-1, eps=1e-8)


class Background(ModelMixin):
    """Colour seen along rays that leave the scene: mode 'mlp' (learned, on the ray direction),
    'constant' (a fixed colour) or 'random' (one random colour per image when `generator` is given)."""

    def __init__(self, mode: str = "mlp", color=(1.0, 1.0, 1.0), hidden: int = 16):
        super().__init__()
        if mode not in ("mlp", "constant", "random"):
            raise ValueError(f"background mode must be 'mlp', 'constant' or 'random', got {mode!r}")
        self.mode = mode
        self.register_buffer("color", torch.tensor(color, dtype=torch.float32))
        self.mlp = (nn.Sequential(nn.Linear(3, hidden), nn.SiLU(), nn.Linear(hidden, 3))
                    if mode == "mlp" else None)

    def forward(self, dirs: torch.Tensor, image_index: torch.Tensor | None = None, n_images: int = 1,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """dirs: (N, 3) unit ray directions -> (N, 3) colours in [0, 1].

        For 'random', `image_index` (N,) says which image each ray belongs to, so an image gets one colour.
        """
        if self.mode == "mlp":
            return torch.sigmoid(self.mlp(dirs))
        if self.mode == "random" and self.training:
            colors = torch.rand(n_images, 3, generator=generator).to(dirs.device)
            idx = image_index if image_index is not None else torch.zeros(len(dirs), dtype=torch.long,
                                                                           device=dirs.device)
            return colors[idx]
        return self.color.to(dirs.device).expand(len(dirs), 3)
