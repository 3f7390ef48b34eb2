"""Training recipe of the built-in image prior: `polydiff threed train-prior --config FILE [key=value ...]`
(the same as `polydiff train threed --config FILE ...`).

The plugin supplies the model (`prior.ImageDenoiser`), the data (multi-view captioned renders of the
primitive world, `dataset.build_data`, built once under `data.root` when missing) and the loss below;
the loop, EMA, checkpoints and resume are `polydiff.core.train.fit`.

Loss: the core EDM diffusion loss on images scaled to [-1, 1], with the caption replaced by the learned
null condition for `cond_dropout` of the samples (classifier-free guidance).

Every distinct caption is encoded once by the frozen text encoder before the loop and kept as a bank
(float16 tokens + mask + pooled, cached beside the shards as `text-bank-*.safetensors`): MiniLM on every
batch would cost more than the U-Net on a CPU.

`export(run_dir_or_checkpoint, dest)` writes a training checkpoint's EMA weights, in float16, as a
package checkpoint folder (the form of threed/checkpoints/prior/).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from polydiff.core.conditioning import Condition, condition_dropout
from polydiff.core.config import load_config
from polydiff.core.losses import diffusion_loss
from polydiff.core.train import TrainConfig, fit, latest_checkpoint

from .prior import ImageDenoiser

log = logging.getLogger("polydiff.threed")


@dataclass
class NetConfig:
    resolution: int = 32
    channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attn_levels: tuple[int, ...] = (2,)
    heads: int = 4
    sigma_data: float = 0.5
    P_mean: float = -0.6
    P_std: float = 1.4
    text_encoder: str | None = None     # None: the bundled MiniLM; else a local Hugging Face folder
    max_text_tokens: int = 32


@dataclass
class DataConfig:
    root: str = "data/threed/prior32"   # npz shards from `polydiff threed build-data`; built here if missing
    images: int = 32000                 # used only when the data has to be built
    views_per_scene: int = 4
    seed: int = 0


@dataclass
class LossConfig:
    cond_dropout: float = 0.1


@dataclass
class PriorRun:
    model: NetConfig = field(default_factory=NetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/threed/prior"))


# -- data --------------------------------------------------------------------------------------------
def ensure_data(cfg: DataConfig, resolution: int) -> Path:
    """The shard folder, rendering it first when it has no train manifest."""
    root = Path(cfg.root).expanduser()
    if not (root / "train-manifest.json").is_file():
        from polydiff.core.progress import progress

        from .dataset import build_data

        log.info("rendering %d training views at %d px into %s", cfg.images, resolution, root)
        build_data(root, images=cfg.images, resolution=resolution, seed=cfg.seed,
                   views_per_scene=cfg.views_per_scene, progress_bar=lambda it: progress(it, desc="rendering"))
    manifest = json.loads((root / "train-manifest.json").read_text())
    if manifest["resolution"] != resolution:
        raise ValueError(f"{root} holds {manifest['resolution']} px images but model.resolution is {resolution}; "
                         "point data.root at another folder or change model.resolution")
    return root


class PriorImages(torch.utils.data.Dataset):
    """The rendered views of a shard folder: item i -> (image (3, R, R) in [-1, 1], caption index)."""

    def __init__(self, root, split: str = "train"):
        root = Path(root)
        manifest = json.loads((root / f"{split}-manifest.json").read_text())
        images, captions = [], []
        for name in manifest["shards"]:
            with np.load(root / name) as shard:
                images.append(shard["images"])
                captions.extend(str(c) for c in shard["captions"])
        self.images = torch.from_numpy(np.concatenate(images))          # (N, R, R, 3) uint8
        self.vocab = sorted(set(captions))
        index = {c: i for i, c in enumerate(self.vocab)}
        self.caption_ids = torch.tensor([index[c] for c in captions])
        self.captions = captions

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        img = self.images[i].permute(2, 0, 1).float() / 127.5 - 1.0
        return img, self.caption_ids[i]


class TextBank:
    """Frozen text embeddings of a fixed caption list: ids (B,) -> the denoiser's text kwargs."""

    def __init__(self, tokens: torch.Tensor, mask: torch.Tensor, pooled: torch.Tensor):
        self.tokens, self.mask, self.pooled = tokens, mask, pooled     # (V, L, D) f16, (V, L) bool, (V, D)

    @classmethod
    def build(cls, captions: list[str], encoder, cache: Path | None = None, batch: int = 256) -> TextBank:
        from safetensors.torch import load_file, save_file

        if cache is not None and cache.is_file():
            t = load_file(str(cache))
            if t["tokens"].shape[0] == len(captions):
                return cls(t["tokens"], t["mask"].bool(), t["pooled"])
        from polydiff.core.progress import progress

        parts = []
        for s in progress(range(0, len(captions), batch), desc="encoding captions"):
            c = encoder(captions[s:s + batch])
            parts.append(c)
        cond = Condition.cat(parts)
        bank = cls(cond.tokens.half(), cond.mask, cond.pooled.float())
        if cache is not None:
            tmp = cache.with_suffix(".tmp")
            save_file({"tokens": bank.tokens.contiguous(), "mask": bank.mask.to(torch.uint8).contiguous(),
                       "pooled": bank.pooled.contiguous()}, str(tmp))
            tmp.replace(cache)
        return bank

    def __call__(self, ids: torch.Tensor, device) -> Condition:
        ids = ids.cpu()
        mask = self.mask[ids]
        length = max(int(mask.sum(1).max()), 1)             # trim the padding common to the batch
        return Condition(self.tokens[ids, :length].float(), mask[:, :length], self.pooled[ids]).to(device)


def text_bank_for(data: PriorImages, root: Path, model: ImageDenoiser) -> TextBank:
    from polydiff.core.text import TextEncoder

    encoder = TextEncoder(model.text_encoder, max_length=model.max_text_tokens, cache_size=16)
    key = hashlib.sha1(("\n".join(data.vocab) + f"|{encoder.path}|{model.max_text_tokens}").encode()).hexdigest()[:12]
    return TextBank.build(data.vocab, encoder, root / f"text-bank-{key}.safetensors")


class PriorLoss:
    """loss_fn(model, batch, generator) for `core.train.fit`."""

    def __init__(self, model: ImageDenoiser, bank: TextBank, cond_dropout: float):
        self.raw, self.bank, self.cond_dropout = model, bank, cond_dropout

    def __call__(self, model, batch, generator):
        x0, ids = batch                                      # (B, 3, R, R), (B,)
        cond = self.bank(ids, x0.device)
        cond = condition_dropout(cond, self.raw.null, self.cond_dropout, generator)
        kw = {"tokens": cond.tokens, "token_mask": cond.mask, "pooled": cond.pooled}
        return diffusion_loss(model, x0, kw, generator=generator)


# -- entry points ----------------------------------------------------------------------------------------
def build(cfg: PriorRun):
    root = ensure_data(cfg.data, cfg.model.resolution)
    data = PriorImages(root)
    model = ImageDenoiser(**asdict(cfg.model))
    bank = text_bank_for(data, root, model)
    return model, data, bank


def train(config_path=None, overrides=(), **_):
    """`polydiff threed train-prior --config FILE key=value ...`; returns the core `TrainResult`."""
    cfg = load_config(PriorRun, config_path, overrides)
    model, data, bank = build(cfg)
    log.info("prior: %.2f M parameters, %d views, %d distinct captions",
             sum(p.numel() for p in model.parameters()) / 1e6, len(data), len(data.vocab))
    return fit(model, data, PriorLoss(model, bank, cfg.loss.cond_dropout), cfg.train, run_config=cfg)


def export(run, dest, half: bool = True) -> Path:
    """A run folder's latest (or a given) training checkpoint -> a package checkpoint folder at `dest`:
    config.json + model.safetensors holding the EMA weights (float16 unless half=False; loading casts
    back to float32)."""
    from polydiff.core.checkpoint import load_pretrained, save_pretrained
    from safetensors.torch import save_file

    run = Path(run)
    ckpt = latest_checkpoint(run) if (run / "checkpoints").is_dir() else run
    if ckpt is None or not (ckpt / "config.json").is_file():
        raise FileNotFoundError(f"{run} has no finished checkpoint")
    model = load_pretrained(ckpt, cls=ImageDenoiser, use_ema=True)
    step = int(ckpt.name.split("-")[-1]) if ckpt.name.startswith("step-") else None
    dest = Path(dest)
    save_pretrained(model, dest, train_step=step, weights="ema, float16" if half else "ema, float32",
                    recipe="polydiff threed train-prior --config threed/configs/prior_small.yaml")
    if half:
        state = {k: v.detach().half().contiguous() if v.is_floating_point() else v.contiguous()
                 for k, v in model.state_dict().items()}
        save_file(state, str(dest / "model.safetensors"))
    return dest
