"""Training recipe of the text-to-motion denoiser: `polydiff train motion --config motion/configs/NAME.yaml`.

The plugin supplies the model (`MotionDenoiser`), the data (`MotionTextDataset` over a HumanML3D-format
folder; the procedural corpus is built under .cache/ when no folder is given) and the loss below; the
loop, EMA, checkpoints and resume are `polydiff.core.train.fit`.

Loss: the core diffusion loss on normalised features, padding masked out (with prediction="x0" and
uniform weighting it is MDM's plain x0 MSE, at EDM's log-normal noise levels), with the text replaced by the learned null condition for `cond_dropout` of the
samples (classifier-free guidance). Optional MDM geometric terms (joint positions, velocities, foot
contact) on the x0 estimate, through the differentiable features -> joints recovery; they cost a
second forward pass, so the shipped CPU recipe leaves them off.

Captions are encoded once, before the loop, by the frozen text encoder (its LRU cache then answers
every batch), since running MiniLM on each batch would cost more than the denoiser on a CPU.

`ship(run_dir, dest)` copies the latest checkpoint's EMA weights into a release folder (EMA as
model.safetensors, no optimizer state), the form of `motion/checkpoints/<name>/`.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from polydiff.core.checkpoint import load_pretrained
from polydiff.core.conditioning import condition_dropout
from polydiff.core.config import load_config, save_config
from polydiff.core.losses import diffusion_loss
from polydiff.core.precond import add_noise
from polydiff.core.runtime import randn
from polydiff.core.text import TextEncoder
from polydiff.core.train import TrainConfig, fit, latest_checkpoint

from .dataset import MotionTextDataset, collate
from .model import MotionDenoiser

log = logging.getLogger("polydiff.motion")
CACHE = Path(__file__).resolve().parents[1] / ".cache"


@dataclass
class NetConfig:
    dim: int = 256
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 2.0
    patch_size: int = 2
    sigma_data: float = 1.0
    P_mean: float = -1.2
    P_std: float = 1.2
    text_encoder: str | None = None     # None: the bundled MiniLM; else a local Hugging Face folder
    prediction: str = "x0"              # "x0": the net predicts clean motion (MDM); "edm": EDM's skip mix


@dataclass
class DataConfig:
    root: str = ""                      # a HumanML3D-format folder; "" = the procedural corpus below
    clips: int = 3000                   # procedural corpus size (built once under .cache/)
    corpus_seed: int = 0
    max_frames: int = 196
    min_frames: int = 40
    fps: float = 20.0


@dataclass
class LossConfig:
    cond_dropout: float = 0.1           # MDM uses 0.1
    pos: float = 0.0                    # geometric loss weights (MDM: 1 each when used)
    vel: float = 0.0
    foot: float = 0.0


@dataclass
class MotionRun:
    model: NetConfig = field(default_factory=NetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/motion"))


def corpus_root(data: DataConfig) -> Path:
    """The data folder, building the procedural corpus under .cache/ on first use."""
    if data.root:
        return Path(data.root).expanduser()
    root = CACHE / f"motion_corpus_s{data.corpus_seed}_n{data.clips}"
    if not (root / "corpus.json").is_file():
        from polydiff.core.progress import progress

        from .corpus import build_data

        log.info("building the procedural motion corpus (%d clips) in %s", data.clips, root)
        build_data(root, clips=data.clips, seed=data.corpus_seed, overwrite=True, progress=progress)
    return root


class MotionLoss:
    """loss_fn(model, batch, generator) for `core.train.fit`; batch = `dataset.collate` output."""

    def __init__(self, model: MotionDenoiser, encoder: TextEncoder, cfg: LossConfig):
        self.raw, self.encoder, self.cfg = model, encoder, cfg

    def __call__(self, model, batch, generator):
        feats, _, mask, captions = batch                    # feats (B, T, C), mask (B, T)
        x0 = feats.transpose(1, 2)                          # (B, C, T)
        device = x0.device
        cond = self.encoder(captions).to(device)
        cond = condition_dropout(cond, self.raw.null, self.cfg.cond_dropout, generator)
        kw = {"tokens": cond.tokens, "token_mask": cond.mask, "pooled": cond.pooled, "mask": mask}
        geometric = self.cfg.pos or self.cfg.vel or self.cfg.foot
        if not geometric:
            return diffusion_loss(model, x0, kw, mask=mask[:, None], generator=generator)
        u = torch.rand(x0.shape[0], generator=generator, device=generator.device if generator else device)
        sigma = self.raw.training_sigma(u.to(device))
        noise = randn(x0.shape, generator, device=device, dtype=x0.dtype)
        loss = diffusion_loss(model, x0, kw, mask=mask[:, None], sigma=sigma, noise=noise)
        from .losses import geometric_losses

        x0_hat = model(add_noise(x0, noise, sigma), sigma, **kw)
        geo = geometric_losses(x0_hat.transpose(1, 2), feats, mask, self.raw.mean, self.raw.std)
        return loss + self.cfg.pos * geo["pos"] + self.cfg.vel * geo["vel"] + self.cfg.foot * geo["foot"]


def build(cfg: MotionRun) -> tuple[MotionDenoiser, MotionTextDataset, TextEncoder]:
    root = corpus_root(cfg.data)
    data = MotionTextDataset(root, "train", max_frames=cfg.data.max_frames, min_frames=cfg.data.min_frames,
                             fps=cfg.data.fps)
    encoder = TextEncoder(cfg.model.text_encoder, cache_size=10**6)
    model = MotionDenoiser(n_feats=data.dim, fps=cfg.data.fps, text_dim=encoder.dim, **asdict(cfg.model))
    model.set_normalization(data.mean, data.std)
    return model, data, encoder


def train(config_path=None, overrides=(), **_):
    """`polydiff train motion --config FILE key=value ...`; returns the core `TrainResult`."""
    cfg = load_config(MotionRun, config_path, overrides)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    model, data, encoder = build(cfg)
    captions = sorted({c for _, caps, _ in data.items for c in caps})
    log.info("encoding %d captions once (cached for the run)", len(captions))
    for i in range(0, len(captions), 256):
        encoder.encode(captions[i:i + 256])
    return fit(model, data, MotionLoss(model, encoder, cfg.loss), cfg.train, run_config=cfg, collate_fn=collate)


def ship(run_dir, dest, use_ema: bool = True) -> Path:
    """Release folder from a run's latest checkpoint: config.json + model.safetensors (the EMA weights)."""
    ckpt = latest_checkpoint(run_dir) if (Path(run_dir) / "checkpoints").is_dir() else Path(run_dir)
    if ckpt is None:
        raise FileNotFoundError(f"{run_dir} has no finished checkpoint")
    model = load_pretrained(ckpt, cls=MotionDenoiser, use_ema=use_ema)
    dest = Path(dest)
    tmp = dest.parent / f".{dest.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, source=str(ckpt.name))
    if (ckpt / "train.yaml").is_file():
        shutil.copy(ckpt / "train.yaml", tmp / "train.yaml")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def save_run_config(cfg: MotionRun, path) -> Path:
    return save_config(cfg, path)
