"""Anomaly scoring with a denoiser: noise the data, denoise it, and measure what did not come back.

A point the model has learnt is pulled back to (near) itself by D(x + sigma eps, sigma); a point off
the data manifold is pulled toward the data, so its reconstruction error is large. Scoring at several
sigmas (and several noise draws) averages out the noise; small sigmas see local detail, large ones
global structure. The reconstruction is one denoiser call per level (the posterior mean E[x0 | x_sigma])
or, with `method`, a short sampler run from sigma down to 0 (a sample from the model's posterior,
closer to the data's own texture than the blurry mean).

`auroc` is here too, since that is how these scores are judged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .runtime import randn


@dataclass
class AnomalyScores:
    """score: (B,) mean squared reconstruction error per sample (higher = more anomalous);
    error: (B, ...) per-element squared error averaged over levels and repeats;
    per_level: (L, B) the score at each sigma."""
    score: torch.Tensor
    error: torch.Tensor
    per_level: torch.Tensor


def anomaly_scores(denoiser, x: torch.Tensor, sigmas=(0.5,), *, generator=None, repeats: int = 1,
                   method: str | None = None, steps: int = 10, cond: dict | None = None,
                   **sample_opts) -> AnomalyScores:
    """Reconstruction-error anomaly scores of x: (B, ...) under `denoiser`.

    sigmas: the noise levels to score at; repeats: noise draws per level (from `generator`, one or a
    list of B per-sample generators). method: None for one denoiser call per level, or a sampler name
    (polydiff.core.samplers) to denoise with `steps` steps of a Karras grid from sigma down to 0."""
    cond = cond or {}
    levels = [float(s) for s in torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1)]
    if not levels or min(levels) <= 0:
        raise ValueError(f"sigmas must be one or more positive noise levels, got {sigmas}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    error = torch.zeros_like(x)
    per_level = []
    for sigma in levels:
        level_error = torch.zeros_like(x)
        for _ in range(repeats):
            noisy = x + sigma * randn(x.shape, generator, device=x.device, dtype=x.dtype)
            if method is None:
                x_hat = denoiser(noisy, x.new_full((x.shape[0],), sigma), **cond)
            else:
                from .samplers import sample
                from .schedules import karras_sigmas
                sigma_min = min(sigma * 1e-2, 2e-3)
                grid = karras_sigmas(steps, sigma_min, sigma).to(device=x.device)
                x_hat = sample(denoiser, noisy, grid, method=method, generator=generator, cond=cond,
                               progress=False, **sample_opts)
            level_error += (x_hat - x).pow(2) / repeats
        error += level_error / len(levels)
        per_level.append(level_error.reshape(x.shape[0], -1).mean(1))
    return AnomalyScores(error.reshape(x.shape[0], -1).mean(1), error, torch.stack(per_level))


def auroc(scores_normal: torch.Tensor, scores_anomalous: torch.Tensor) -> float:
    """Area under the ROC curve = P(anomalous score > normal score) + 0.5 P(tie) (Mann-Whitney U)."""
    a = torch.as_tensor(scores_normal, dtype=torch.float64).reshape(-1)
    b = torch.as_tensor(scores_anomalous, dtype=torch.float64).reshape(-1)
    if a.numel() == 0 or b.numel() == 0:
        raise ValueError("auroc needs at least one normal and one anomalous score")
    both = torch.cat([a, b])
    order = both.argsort()
    ranks = torch.empty_like(both)
    ranks[order] = torch.arange(1, both.numel() + 1, dtype=torch.float64)
    uniq, inverse = torch.unique(both, return_inverse=True)       # average ranks over ties
    sums = torch.zeros_like(uniq).index_add_(0, inverse, ranks)
    counts = torch.zeros_like(uniq).index_add_(0, inverse, torch.ones_like(ranks))
    ranks = (sums / counts)[inverse]
    u = ranks[a.numel():].sum() - b.numel() * (b.numel() + 1) / 2
    return float(u / (a.numel() * b.numel()))
