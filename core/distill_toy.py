"""A small vector denoiser and its training recipe: the teacher (and student) of the DMD toys.

`ToyDenoiser` is an EDM-preconditioned MLP on vectors (B, dim): it is at once a `Parameterisation`
(so `diffusion_loss`, the samplers and `polydiff.core.distill` take it as it is) and a `ModelMixin`
(so the shared trainer saves it and `load_pretrained` rebuilds it). That is the shape distillation
expects of any teacher: a precond wrapper that can be saved, or one whose `.net` can.

    teacher = train_toy_teacher(points, "runs/toy-teacher", steps=3000)
    x0 = sample(teacher, noise * 80.0, karras_sigmas(50, 0.002, 80.0))
"""

from __future__ import annotations

import torch
from torch import nn

from .checkpoint import ModelMixin
from .embeddings import NoiseEmbedding
from .losses import diffusion_loss
from .precond import EDMPrecond
from .train import TrainConfig, fit


class _MLP(nn.Module):
    """F(x_in, c_noise): x_in (B, dim) and the noise embedding in, (B, dim) out; residual SiLU blocks."""

    def __init__(self, dim: int, hidden: int, depth: int):
        super().__init__()
        self.embed = NoiseEmbedding(hidden, kind="fourier", channels=32, fourier_scale=4.0)
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden)) for _ in range(depth))
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x_in, c_noise):
        h = self.inp(x_in) + self.embed(c_noise, batch_size=x_in.shape[0])
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


class ToyDenoiser(EDMPrecond, ModelMixin):
    """D(x, sigma) = EDM preconditioning around a residual MLP; x: (B, dim)."""

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, sigma_data: float = 1.0,
                 P_mean: float = -0.8, P_std: float = 1.4):
        super().__init__(_MLP(dim, hidden, depth), sigma_data=sigma_data, P_mean=P_mean, P_std=P_std)


def train_toy_teacher(points: torch.Tensor, out_dir, *, steps: int = 3000, batch_size: int = 512,
                      lr: float = 2e-3, hidden: int = 128, depth: int = 3, seed: int = 0,
                      device: str = "cpu") -> ToyDenoiser:
    """Train a `ToyDenoiser` on data points (N, dim) with the shared trainer; returns the EMA weights."""
    torch.manual_seed(seed)
    sigma_data = float(points.std())
    model = ToyDenoiser(points.shape[1], hidden, depth, sigma_data=round(sigma_data, 4))
    data = torch.utils.data.TensorDataset(points.float())
    cfg = TrainConfig(out_dir=str(out_dir), steps=steps, batch_size=batch_size, lr=lr, warmup_steps=100,
                      ema_decay=0.995, checkpoint_every=steps, keep_last=1, log_every=100, device=device,
                      seed=seed, resume="never")
    result = fit(model, data, lambda m, batch, gen: diffusion_loss(m, batch[0], generator=gen), cfg)
    result.ema.copy_to(result.model)
    return result.model.eval()
