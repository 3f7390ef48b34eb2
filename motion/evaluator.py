"""Our motion-text contrastive evaluator: R-precision and an FID analogue on the procedural corpus.

This is OURS, trained here on the procedural corpus; it is not the T2M evaluator of Guo et al. (2022)
and its figures are not comparable with published HumanML3D numbers. It plays the same role: a motion
encoder and a text encoder mapped into one embedding space by a symmetric InfoNCE loss (as in CLIP /
TMR), so that
- R-precision: for each motion, its caption is ranked among `pool` captions (itself + pool - 1 others)
  by embedding distance; top-k = fraction whose caption is within the k nearest (T2M uses pool 32);
- FID analogue: the Frechet distance between Gaussians fitted to the motion embeddings of two sets
  (ground truth vs generated).

Motion encoder: two strided 1D convolutions over normalised features, a masked mean over time, a
linear head; text side: an MLP on the frozen sentence encoder's pooled vector. Trained by the core
trainer (`fit`) and cached under .cache/ per corpus.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from polydiff.core.checkpoint import ModelMixin, load_pretrained
from polydiff.core.train import TrainConfig, fit, latest_checkpoint
from torch import nn

from .features import FEATURE_DIM


class MotionTextEvaluator(ModelMixin):
    def __init__(self, n_feats: int = FEATURE_DIM, dim: int = 256, text_dim: int = 384, embed_dim: int = 128):
        super().__init__()
        self.motion = nn.ModuleList([
            nn.Conv1d(n_feats, dim, 4, stride=2, padding=1),
            nn.Conv1d(dim, dim, 4, stride=2, padding=1),
            nn.Conv1d(dim, dim, 3, padding=1),
        ])
        self.motion_head = nn.Linear(dim, embed_dim)
        self.text = nn.Sequential(nn.Linear(text_dim, dim), nn.GELU(), nn.Linear(dim, embed_dim))
        self.log_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))
        self.register_buffer("mean", torch.zeros(n_feats))
        self.register_buffer("std", torch.ones(n_feats))

    def encode_motion(self, feats: torch.Tensor, mask: torch.Tensor | None = None, normalized: bool = True):
        """feats (B, T, C) normalised (or raw with normalized=False), mask (B, T) -> unit embeddings (B, E)."""
        if not normalized:
            feats = (feats - self.mean) / self.std
        if mask is None:
            mask = torch.ones(feats.shape[:2], dtype=torch.bool, device=feats.device)
        h, m = feats.transpose(1, 2), mask[:, None].to(feats.dtype)          # (B, C, T), (B, 1, T)
        for k, conv in enumerate(self.motion):
            # padded frames are zeroed before every layer, so no real frame ever sees them
            h = conv(h * m)
            m = m[..., :: conv.stride[0]][..., : h.shape[-1]]
            h = F.gelu(h) if k < len(self.motion) - 1 else h
        pooled = (h * m).sum(-1) / m.sum(-1).clamp_min(1)                     # (B, dim)
        return F.normalize(self.motion_head(pooled), dim=-1)

    def encode_text(self, pooled: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(pooled), dim=-1)


class ContrastiveLoss:
    def __init__(self, model: MotionTextEvaluator, encoder):
        self.model, self.encoder = model, encoder

    def __call__(self, model, batch, generator):
        feats, _, mask, captions = batch
        m = self.model.encode_motion(feats, mask)
        t = self.model.encode_text(self.encoder(captions).pooled.to(feats.device))
        logits = m @ t.T * self.model.log_scale.exp().clamp(max=100)
        labels = torch.arange(len(m), device=m.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def train_evaluator(root, out_dir, encoder, steps: int = 600, batch_size: int = 64, seed: int = 0):
    """Train (or reuse the cached) evaluator on the corpus at `root`; returns the model (eval mode)."""
    from .dataset import MotionTextDataset, collate

    out_dir = Path(out_dir)
    done = latest_checkpoint(out_dir) if (out_dir / "checkpoints").is_dir() else None
    if done is not None and done.name == f"step-{steps:09d}":
        return load_pretrained(done, cls=MotionTextEvaluator)
    data = MotionTextDataset(root, "train")
    model = MotionTextEvaluator(n_feats=data.dim, text_dim=encoder.dim)
    model.mean.copy_(torch.from_numpy(data.mean))
    model.std.copy_(torch.from_numpy(data.std))
    cfg = TrainConfig(out_dir=str(out_dir), steps=steps, batch_size=batch_size, lr=1e-3, warmup_steps=50,
                      checkpoint_every=steps, keep_last=1, log_every=50, seed=seed, device="cpu", ema_decay=0.0)
    fit(model, data, ContrastiveLoss(model, encoder), cfg, collate_fn=collate)
    return load_pretrained(latest_checkpoint(out_dir), cls=MotionTextEvaluator)


@torch.no_grad()
def embed_motions(model: MotionTextEvaluator, features: list[np.ndarray]) -> np.ndarray:
    """Raw features, one (T_i, C) array per motion -> (N, E) embeddings."""
    out = []
    for f in features:
        x = torch.as_tensor(np.asarray(f), dtype=torch.float32)[None]
        out.append(model.encode_motion(x, normalized=False)[0].numpy())
    return np.stack(out)


@torch.no_grad()
def embed_texts(model: MotionTextEvaluator, encoder, captions: list[str]) -> np.ndarray:
    return model.encode_text(encoder(captions).pooled).numpy()


def r_precision(motion_emb: np.ndarray, text_emb: np.ndarray, pool: int = 32, top: int = 3,
                seed: int = 0) -> np.ndarray:
    """Top-1..top R-precision: motion i against its caption i and pool - 1 captions of other items."""
    n = len(motion_emb)
    rng = np.random.default_rng(seed)
    hits = np.zeros(top)
    for i in range(n):
        others = rng.choice(np.delete(np.arange(n), i), size=min(pool - 1, n - 1), replace=False)
        cand = np.concatenate([[i], others])
        d = np.linalg.norm(text_emb[cand] - motion_emb[i], axis=-1)
        rank = int((d < d[0]).sum())
        hits += rank < np.arange(1, top + 1)
    return hits / n


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID formula between Gaussians fitted to the rows of a and b."""
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))
