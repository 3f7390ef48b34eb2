"""Embeddings of scalars and positions: the noise level `c_noise` and token / frame positions.

Two ways to turn a scalar into a vector of sines and cosines:

- `sinusoidal(x, dim)`: the Transformer positional code, frequencies on a geometric ladder from 1 to
  1/max_period. Good for integer positions and for `c_noise = log(sigma) / 4` (EDM) alike.
- `FourierEmbedding`: random Fourier features (Tancik et al. 2020; used for noise levels by NCSN++ and
  EDM's VE/iDDPM nets). The frequencies are drawn once at construction and kept in a buffer, so they
  are saved with the weights and never trained.

`NoiseEmbedding` = one of the two + a 2-layer MLP; every backbone conditions its blocks on its output.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal(x: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """x: (...,) -> (..., dim): [cos(x w_k), sin(x w_k)] with w_k = max_period^(-k / (dim/2))."""
    if dim % 2:
        raise ValueError(f"sinusoidal embedding needs an even dim, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = x.float()[..., None] * freqs
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


def sinusoidal_positions(length: int, dim: int, device=None) -> torch.Tensor:
    """(length, dim) positional code for positions 0..length-1."""
    return sinusoidal(torch.arange(length, device=device, dtype=torch.float32), dim)


def sinusoidal_positions_2d(height: int, width: int, dim: int, device=None) -> torch.Tensor:
    """(height * width, dim), row-major: half the channels code the row, half the column."""
    if dim % 4:
        raise ValueError(f"2D sinusoidal positions need dim divisible by 4, got {dim}")
    rows = sinusoidal_positions(height, dim // 2, device)  # (H, dim/2)
    cols = sinusoidal_positions(width, dim // 2, device)  # (W, dim/2)
    grid = torch.cat([rows[:, None].expand(-1, width, -1), cols[None].expand(height, -1, -1)], dim=-1)
    return grid.reshape(height * width, dim)


class FourierEmbedding(nn.Module):
    """x: (B,) -> (B, dim) with fixed random frequencies f ~ N(0, scale^2): [cos 2pi f x, sin 2pi f x]."""

    def __init__(self, dim: int, scale: float = 16.0, seed: int = 0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"Fourier embedding needs an even dim, got {dim}")
        # A private generator: the frequencies do not depend on (or disturb) the global RNG state.
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", torch.randn(dim // 2, generator=gen) * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * x.float()[..., None] * self.freqs
        return torch.cat([angles.cos(), angles.sin()], dim=-1)


class SinusoidalEmbedding(nn.Module):
    """x: (B,) -> (B, dim), `sinusoidal` as a module (EDM's DDPM++ uses it for c_noise)."""

    def __init__(self, dim: int, max_period: float = 10_000.0):
        super().__init__()
        self.dim, self.max_period = dim, max_period

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sinusoidal(x, self.dim, self.max_period)


class NoiseEmbedding(nn.Module):
    """c_noise (B,) -> (B, out_dim): fixed sin/cos features, then Linear-SiLU-Linear.

    kind: "fourier" (random features, `fourier_scale` sets their bandwidth; keep it near 16 for
    c_noise = log(sigma)/4 in [-3, 3]) or "sinusoidal" (positional ladder; suits c_noise = 1000 t).
    """

    def __init__(self, out_dim: int, kind: str = "fourier", channels: int = 256, fourier_scale: float = 16.0):
        super().__init__()
        if kind == "fourier":
            self.features = FourierEmbedding(channels, scale=fourier_scale)
        elif kind == "sinusoidal":
            self.features = SinusoidalEmbedding(channels)
        else:
            raise ValueError(f"noise embedding kind must be 'fourier' or 'sinusoidal', got {kind!r}")
        self.mlp = nn.Sequential(nn.Linear(channels, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, c_noise: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        c_noise = torch.as_tensor(c_noise, device=self.mlp[0].weight.device).reshape(-1)  # (B,), also from (B, 1, 1) or a scalar
        if batch_size is not None and c_noise.numel() == 1:
            c_noise = c_noise.expand(batch_size)
        # sigma = inf (the pure-noise end) gives c_noise = log(inf)/4 = inf, and cos(inf) = NaN;
        # a large finite value keeps the features finite (that level is never trained on anyway).
        c_noise = torch.nan_to_num(c_noise.float(), posinf=1e4, neginf=-1e4)
        return self.mlp(self.features(c_noise).to(self.mlp[0].weight.dtype))
