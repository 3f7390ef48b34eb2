"""The training recipe: `polydiff train audio --config audio/configs/base.yaml [key=value ...]`.

Builds the corpus subset the config names if it is not there yet (resumable, see `corpus.build_data`),
then trains `AudioDiffusion` on its train split through the shared trainer (`core.train.fit`), with
checkpoints, EMA and exact resume in `train.out_dir`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from polydiff.core.checkpoint import read_config
from polydiff.core.config import load_config
from polydiff.core.train import TrainConfig, fit

from .notes import VOCAB


@dataclass
class ModelConfig:
    """Constructor arguments of `AudioDiffusion` (see audio/model.py)."""

    dim: int = 256
    depth: int = 4
    heads: int = 4
    patch: int = 8
    cond_dim: int = 128
    note_depth: int = 1
    context_depth: int = 1
    context_stride: int = 8
    time_bin: int = 8
    max_tokens: int = 256
    sigma_data: float = 0.5
    p_drop_notes: float = 0.1
    p_drop_context: float = 0.1
    roll: bool = True               # the notes' piano roll as extra input channels (see audio/model.py)
    backbone: str = "unet"          # unet (core UNet1D, mel bins as channels) or dit (core DiT, time patches)
    channels: int = 96              # U-Net width at full resolution
    channel_mult: tuple[int, ...] = (1, 2, 2)
    template: bool = False          # the notes drawn as a harmonic mel template, extra input channels
    timbre: bool = False            # ... drawn by the learned renderer instead (audio/timbre.py; fitted first)
    residual: bool = False          # diffuse the mel's difference from the template (see AudioDiffusion.mean_of)
    context_mean: bool = False      # residual: without notes, centred on the context's held level, not silence
    timbre_subframe: bool = False   # the learned renderer places attacks at their exact 10 ms onset
    timbre_bank: bool = False       # ... and draws the corpus's instruments from lone-note mels (audio/bank.py)
    sharp_weight: float = 0.0       # weight of the L1 loss on the one-step output (see model.audio_loss)
    sharp_flux: float = 1.0         # ... of its frame-to-frame-change term
    sharp_sigma: float = 10.0       # ... the noise level it is taken at (the default sampler's sigma_max)
    sharp_onset: float = 0.0        # ... weight of its onset-envelope term
    p_mean: float = -1.2            # training noise levels: log sigma ~ N(p_mean, p_std^2) (EDM)
    p_std: float = 1.2


@dataclass
class DataConfig:
    cache: str = ".cache/audio_corpus"
    max_pieces: int = 100           # music21 pieces (all splits) built into the cache if missing
    max_seconds: float = 60.0       # each piece cut after this long
    seed: int = 0                   # arrangement seed of the corpus


@dataclass
class AudioRun:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/audio"))
    threads: int = 1                # torch CPU threads (1 is fastest for these small ops on a busy CPU)
    init: str = ""                  # start from this checkpoint's weights (EMA if present; see init_weights)
    timbre_steps: int = 1200        # fitting steps of the learned renderer (model.timbre) before training
    timbre_flux: float = 1.0        # weight of its frame-to-frame-change loss (timbre.fit_timbre)


def trim_collate(items):
    """Default collate, then cut the token rows to the longest real one in the batch (padding past it
    would only cost attention)."""
    mel, tokens, context = torch.utils.data.default_collate(items)
    n = int((tokens != VOCAB.pad).sum(1).max().clamp(min=1))
    return mel, tokens[:, :n].contiguous(), context


def train(config_path=None, overrides=(), **_):
    from .corpus import AudioSegments, build_data
    from .model import AudioDiffusion, audio_loss

    cfg = load_config(AudioRun, config_path, overrides)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    build_data(cfg.data.cache, max_pieces=cfg.data.max_pieces, seed=cfg.data.seed,
               max_seconds=cfg.data.max_seconds)
    data = AudioSegments(cfg.data.cache, "train", max_tokens=cfg.model.max_tokens)
    model = AudioDiffusion(**asdict(cfg.model))
    if cfg.init:
        init_weights(model, cfg.init)
        if cfg.model.residual and not read_config(cfg.init)["config"].get("residual", False):
            # a full-mel model turned residual: its output layer starts at zero, so the fine-tune begins
            # at the template itself (D = template at high noise) instead of template + a whole mel
            torch.nn.init.zeros_(model.net.conv_out.weight)
            torch.nn.init.zeros_(model.net.conv_out.bias)
    if cfg.model.timbre and not (cfg.init and _has_timbre(cfg.init)):    # else: the init's renderer, kept
        missing, _ = model.timbre.load_state_dict(fitted_timbre(cfg).state_dict(), strict=False)
        assert all(k.startswith("bank_") for k in missing), missing      # the bank is set below
    if cfg.model.timbre_bank and not (cfg.init and _has_bank(cfg.init)):
        model.timbre.set_bank(built_bank(cfg, model.timbre, data))
    return fit(model, data, audio_loss, cfg.train, run_config=cfg, collate_fn=trim_collate)


def _weights_file(folder):
    """A checkpoint folder's weights: its EMA ones when it has them."""
    from pathlib import Path

    folder = Path(folder)
    return folder / ("ema.safetensors" if (folder / "ema.safetensors").is_file() else "model.safetensors")


def _weight_names(folder) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(_weights_file(folder)), "pt") as f:
        return set(f.keys())


def _has_timbre(folder) -> bool:
    return any(k.startswith("timbre.") for k in _weight_names(folder))


def _has_bank(folder) -> bool:
    return "timbre.bank_u" in _weight_names(folder)


def built_bank(cfg: AudioRun, timbre, data):
    """The note bank for a run (`bank.build_bank`, FluidSynth renders of lone notes, about a minute) with
    its level offset fitted to the run's training segments (`bank.fit_offset`), kept in the run folder as
    bank.safetensors so a resumed run uses the same one."""
    from pathlib import Path

    from polydiff.core.runtime import atomic_write
    from safetensors.torch import load_file, save_file

    from .bank import build_bank, fit_offset

    path = Path(cfg.train.out_dir) / "bank.safetensors"
    if path.is_file():
        return load_file(str(path))
    bank = build_bank()
    timbre.set_bank(bank)
    bank["offset"] = torch.tensor(fit_offset(timbre, data, seed=cfg.data.seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: save_file({k: v.contiguous() for k, v in bank.items()}, str(tmp)))
    return bank


def fitted_timbre(cfg: AudioRun):
    """The learned renderer for a run: fitted to the corpus's train split once (`timbre.fit_timbre`,
    a few minutes) and kept in the run folder as timbre.safetensors, so a resumed run uses the same one."""
    from pathlib import Path

    from polydiff.core.runtime import atomic_write
    from safetensors.torch import load_file, save_file

    from .timbre import Timbre, fit_timbre

    path = Path(cfg.train.out_dir) / "timbre.safetensors"
    timbre = Timbre(subframe=cfg.model.timbre_subframe)
    if path.is_file():
        timbre.load_state_dict(load_file(str(path)))
        return timbre
    timbre = fit_timbre(cfg.data.cache, steps=cfg.timbre_steps, seed=cfg.data.seed, flux=cfg.timbre_flux,
                        subframe=cfg.model.timbre_subframe)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in timbre.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, str(tmp)))
    return timbre


def init_weights(model, folder) -> list[str]:
    """Copy a checkpoint's weights (EMA when it has them) into `model`, for fine-tuning with more input
    channels: a tensor whose shape differs only by a larger second dimension (the backbone's input conv
    when note channels are added after the old ones) gets the old weights in its leading slice and
    zeros elsewhere, so the widened model starts out computing exactly what the old one did. Returns
    the names that were widened; any other mismatch is an error."""
    from pathlib import Path

    from safetensors.torch import load_file

    folder = Path(folder)
    old = load_file(str(_weights_file(folder)))
    state = model.state_dict()
    missing = sorted(k for k in set(state) - set(old) if not k.startswith("timbre."))   # fitted apart
    if missing:
        raise ValueError(f"init {folder}: the checkpoint lacks {missing[:3]}...; it is not an audio model "
                         "of this layout")
    widened = []
    for k, v in state.items():
        if k not in old:
            continue
        w = old[k].to(v.dtype)
        if w.shape != v.shape:
            if w.ndim != v.ndim or w.shape[:1] != v.shape[:1] or w.shape[2:] != v.shape[2:] or w.shape[1] > v.shape[1]:
                raise ValueError(f"init {folder}: {k} has shape {tuple(w.shape)}, the model {tuple(v.shape)}")
            w = torch.cat([w, torch.zeros(v.shape[0], v.shape[1] - w.shape[1], *v.shape[2:], dtype=v.dtype)], 1)
            widened.append(k)
        state[k] = w
    model.load_state_dict(state)
    return widened


def export(run_checkpoint, dest, half: bool = True,
           recipe: str = "polydiff train audio --config audio/configs/base.yaml"):
    """A training checkpoint's EMA weights as a package checkpoint folder (config.json + model.safetensors,
    float16 by default to halve the size; loading casts back to the model's float32). `recipe` is the
    command recorded in config.json that reproduces the run."""
    from pathlib import Path

    from polydiff.core.checkpoint import load_pretrained, save_pretrained
    from safetensors.torch import save_file

    from .model import AudioDiffusion

    run_checkpoint, dest = Path(run_checkpoint), Path(dest)
    model = load_pretrained(run_checkpoint, cls=AudioDiffusion, use_ema=True)
    step = int(run_checkpoint.name.split("-")[-1]) if run_checkpoint.name.startswith("step-") else None
    save_pretrained(model, dest, train_step=step, weights="ema, float16" if half else "ema, float32",
                    recipe=recipe)
    if half:
        state = {k: v.detach().half().contiguous() if v.is_floating_point() else v.contiguous()
                 for k, v in model.state_dict().items()}
        save_file(state, str(dest / "model.safetensors"))
    return dest
