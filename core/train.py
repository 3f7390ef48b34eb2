"""The one training loop, shared by every modality, on Hugging Face `accelerate`.

A plugin supplies a model (a `ModelMixin`), a dataset (map-style `Dataset` or any iterable of samples)
and a loss `loss_fn(model, batch, generator) -> scalar tensor`; `fit` does the rest:

    result = fit(model, dataset, loss_fn, cfg.train, run_config=cfg, sample_fn=None)

AdamW with linear warm-up and cosine decay, gradient accumulation and clipping, mixed precision
(bf16 where the device supports it, fp32 on the CPU by default), EMA with warm-up, a CSV log (and
TensorBoard when asked), a progress bar, periodic sample hooks on the EMA weights, checkpoints that
resume exactly, and a guard that stops on a non-finite loss or gradient.

A plugin's `train(config_path, overrides)` (what `polydiff train PLUGIN --config FILE key=value` calls):

    @dataclass
    class MotionRun:                       # the whole run, saved as train.yaml in every checkpoint
        model: NetConfig = field(default_factory=NetConfig)
        train: TrainConfig = field(default_factory=TrainConfig)

    def train(config_path, overrides):
        cfg = load_config(MotionRun, config_path, overrides)     # polydiff.core.config
        fit(Net(**asdict(cfg.model)), MotionDataset(...), motion_loss, cfg.train, run_config=cfg)

Multi-process: the same command under `torchrun --nproc_per_node N -m polydiff.core.cli train ...`
(add --nnodes / --rdzv-endpoint for several machines), or on GPUs `accelerate launch --multi_gpu
--num_processes N -m polydiff.core.cli train ...` (accelerate's launcher runs CPU jobs in one process
unless MPI is configured; use torchrun there), trains with DDP (gloo on CPU, NCCL on GPU). `batch_size` is the GLOBAL batch of one optimizer step
(all processes and accumulation micro-steps together), and the trainer cuts it into per-process
micro-batches itself: sample i of the run is always the i-th sample of one seeded stream of epoch
permutations, whatever the process count. That is what makes a 2-process run equal a 1-process run,
and a resumed run equal an uninterrupted one (the stream position is `samples_seen`).

The noise a loss draws comes from `generator`, a fresh `torch.Generator` seeded from
(seed, step, micro-step, rank), so it needs no state to resume. The global RNGs (dropout, ...) are
saved per process in every checkpoint and restored on resume.

Checkpoint folder, `out_dir/checkpoints/step-000001000/` (written to a temp folder, then renamed):
    config.json, model.safetensors, ema.safetensors   the model, loadable by `load_pretrained`
    train.yaml                                         the run config
    optimizer.safetensors + optimizer.json             AdamW state tensors / everything else
    trainer_state.json                                 step, samples seen, EMA step, grad scaler
    rng-rank{R}.safetensors                            per-process torch RNG states; Python / NumPy in metadata
Nothing is pickled, and resuming never unpickles.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .checkpoint import CheckpointError, ModelMixin, check_state_dict, save_pretrained
from .config import save_config
from .ema import EMA
from .progress import progress
from .runtime import resolve_device

log = logging.getLogger("polydiff")

CHECKPOINTS = "checkpoints"
STATE_VERSION = 1


@dataclass
class TrainConfig:
    """The trainer's knobs; a plugin's run config nests this as its `train` field."""

    out_dir: str = "runs/train"
    steps: int = 10_000              # optimizer steps
    batch_size: int = 64             # global: all processes x accumulation micro-steps
    grad_accum: int = 1              # micro-steps per optimizer step
    lr: float = 2e-4
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = 500          # linear warm-up from lr/warmup_steps to lr
    min_lr_ratio: float = 0.0        # cosine decays to lr * min_lr_ratio at the last step
    weight_decay: float = 0.0        # AdamW; applied to matrices / kernels only, not biases or norms
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    grad_clip: float = 1.0           # max global grad norm; 0 = no clipping
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"   # auto: bf16 on a GPU that has it
    ema_decay: float = 0.999
    ema_warmup: bool = True          # decay_t = min(ema_decay, (1 + t) / (10 + t))
    checkpoint_every: int = 1000
    keep_last: int = 3               # checkpoints kept on disk (older ones are deleted)
    sample_every: int = 0            # sample hook period in steps; 0 = never
    log_every: int = 10
    tensorboard: bool = False
    seed: int = 0
    shuffle: bool = True
    num_workers: int = 0
    device: str = "auto"             # cpu, cuda, mps, auto; under torchrun each process takes its GPU
    resume: str = "auto"             # auto: latest checkpoint in out_dir if any; never; or a folder
    ddp_find_unused: bool = False


def check_config(cfg: TrainConfig) -> None:
    """One clear error for a setting the loop cannot run with."""
    positive = ("batch_size", "grad_accum", "checkpoint_every", "log_every", "keep_last")
    for name in positive:
        if getattr(cfg, name) < 1:
            raise ValueError(f"train.{name} must be >= 1, got {getattr(cfg, name)}")
    for name in ("steps", "warmup_steps", "sample_every", "num_workers", "lr", "weight_decay", "grad_clip"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"train.{name} must be >= 0, got {getattr(cfg, name)}")
    if not 0 <= cfg.ema_decay < 1:
        raise ValueError(f"train.ema_decay must be in [0, 1), got {cfg.ema_decay}")
    if cfg.mixed_precision == "fp16" and resolve_device(cfg.device).type != "cuda":
        raise ValueError("train.mixed_precision=fp16 needs a CUDA GPU; use bf16 or no")


class TrainingDiverged(RuntimeError):
    """The loss or the gradient became NaN / inf; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    model: ModelMixin                # trained (non-EMA) weights, unwrapped
    ema: EMA
    step: int
    checkpoint: Path | None
    losses: list[float] = field(default_factory=list)   # mean loss of each step run in this call


# -- learning rate ------------------------------------------------------------------------------
def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warm-up, then cosine to the floor."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    floor = cfg.lr * cfg.min_lr_ratio
    progress_ = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress_)))


# -- data: one seeded stream of samples, cut into per-process micro-batches ----------------------
class _StreamBatches:
    """Batch sampler over a map-style dataset: index lists of this process's share of every global
    micro-batch, starting at stream position `start`. Epoch e is permutation e of the dataset."""

    def __init__(self, n, micro, world, rank, seed, shuffle, start):
        self.n, self.micro, self.world, self.rank = n, micro, world, rank
        self.seed, self.shuffle, self.start = seed, shuffle, start
        self._epoch, self._perm = -1, None

    def _index(self, i: int) -> int:
        epoch, j = divmod(i, self.n)
        if not self.shuffle:
            return j
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(_mix(self.seed, epoch, 0xDA7A))
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g).tolist()
        return self._perm[j]

    def __iter__(self):
        pos = self.start
        while True:
            first = pos + self.rank * self.micro
            yield [self._index(i) for i in range(first, first + self.micro)]
            pos += self.micro * self.world


def _iterable_batches(data, micro, world, rank, start, collate):
    """The same cut for an iterable dataset (re-iterated when exhausted); resuming skips `start` items."""
    def stream():
        while True:
            empty = True
            for item in data:
                empty = False
                yield item
            if empty:
                raise ValueError("the training data yielded no samples; check the dataset")

    items = itertools.islice(stream(), start, None)
    while True:
        chunk = list(itertools.islice(items, micro * world))
        yield collate(chunk[rank * micro:(rank + 1) * micro])


def _batches(data, cfg, micro, world, rank, start, collate_fn):
    collate = collate_fn or torch.utils.data.default_collate
    if isinstance(data, torch.utils.data.IterableDataset) or not hasattr(data, "__getitem__"):
        return _iterable_batches(data, micro, world, rank, start, collate)
    if len(data) == 0:
        raise ValueError("the training dataset is empty")
    sampler = _StreamBatches(len(data), micro, world, rank, cfg.seed, cfg.shuffle, start)
    # The loader's own generator (worker seeds) is seeded from the stream position, so creating it
    # never draws from the global RNG: a resumed run keeps the same global RNG stream.
    g = torch.Generator().manual_seed(_mix(cfg.seed, start, rank))
    loader = torch.utils.data.DataLoader(data, batch_sampler=sampler, collate_fn=collate,
                                         num_workers=cfg.num_workers, generator=g,
                                         pin_memory=torch.cuda.is_available())
    return iter(loader)


def _mix(*ints) -> int:
    """A seed in [0, 2**63) from a tuple of integers (splitmix64 finaliser chained over the tuple)."""
    h = 0x9E3779B97F4A7C15
    for i in ints:
        h = (h ^ (int(i) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h = (h ^ (h >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 29
    return h >> 1


# -- accelerate ---------------------------------------------------------------------------------
def _accelerator(cfg: TrainConfig):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState, PartialState
    from accelerate.utils import DistributedDataParallelKwargs

    device = resolve_device(cfg.device)
    precision = cfg.mixed_precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "no"
    # accelerate keeps process-wide singletons; each `fit` in one process starts from fresh settings.
    AcceleratorState._reset_state(reset_partial_state=not torch.distributed.is_initialized())
    GradientState._reset_state()
    if not torch.distributed.is_initialized():
        PartialState._reset_state()
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=cfg.ddp_find_unused)]
    return Accelerator(cpu=device.type == "cpu", mixed_precision=precision, kwargs_handlers=handlers)


def _param_groups(model: torch.nn.Module, weight_decay: float):
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


# -- checkpoints --------------------------------------------------------------------------------
def list_checkpoints(out_dir) -> list[Path]:
    """The finished checkpoint folders of a run, oldest first."""
    folder = Path(out_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def latest_checkpoint(out_dir) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    # safetensors only. (Not checkpoint.read_weights: its pickle sniff also refuses a valid file whose
    # 8-byte header length happens to start with byte 0x80.)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; this training checkpoint is incomplete")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err


def _optimizer_to_files(state: dict, folder: Path) -> None:
    tensors, scalars = {}, {}
    for idx, entry in state["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{name}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    save_file(tensors, str(folder / "optimizer.safetensors"))
    meta = {"param_groups": state["param_groups"], "scalars": scalars}
    (folder / "optimizer.json").write_text(json.dumps(meta, indent=1))


def _optimizer_from_files(folder: Path) -> dict:
    tensors = _read_tensors(folder / "optimizer.safetensors")
    meta = json.loads((folder / "optimizer.json").read_text())
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for idx, entry in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(entry)
    groups = [{k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in g.items()}
              for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def _rng_to_file(path: Path) -> None:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda{i}"] = s
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    meta = {"python": json.dumps([version, list(internal), gauss]),
            "numpy": json.dumps([kind, keys.tolist(), int(pos), int(has_gauss), float(cached)])}
    save_file(tensors, str(path), metadata=meta)


def _rng_from_file(path: Path) -> None:
    tensors = _read_tensors(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("torch_cuda"))]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = json.loads(meta["python"])
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = json.loads(meta["numpy"])
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def _save_checkpoint(acc, model, ema, optimizer, cfg, run_config, step, samples_seen) -> Path:
    """Every process writes its RNG file into a temp folder; the main process writes the rest and
    renames the folder into place, so a crash never leaves a half-written checkpoint."""
    root = Path(cfg.out_dir) / CHECKPOINTS
    final = root / f"step-{step:09d}"
    tmp = root / f".tmp-step-{step:09d}"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    _rng_to_file(tmp / f"rng-rank{acc.process_index}.safetensors")
    if acc.is_main_process:
        save_pretrained(acc.unwrap_model(model), tmp, ema_state=ema.state_dict(), train_step=step)
        save_config(run_config if run_config is not None else cfg, tmp / "train.yaml")
        _optimizer_to_files(optimizer.state_dict(), tmp)
        scaler = acc.scaler.state_dict() if acc.scaler is not None else None
        state = {"version": STATE_VERSION, "step": step, "samples_seen": samples_seen, "ema_step": ema.step,
                 "world_size": acc.num_processes, "grad_scaler": scaler}
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
    acc.wait_for_everyone()
    if acc.is_main_process:
        if final.exists():  # re-running a step already saved: replace it
            old = root / f".old-step-{step:09d}"
            shutil.rmtree(old, ignore_errors=True)
            os.rename(final, old)
            shutil.rmtree(old)
        os.rename(tmp, final)
        for stale in list_checkpoints(cfg.out_dir)[:-max(1, cfg.keep_last)]:
            shutil.rmtree(stale, ignore_errors=True)
    acc.wait_for_everyone()
    return final


def _load_checkpoint(folder: Path, acc, model, ema, optimizer) -> dict:
    """Restore model, EMA, optimizer and scaler from `folder`; returns trainer_state.json."""
    folder = Path(folder)
    state_path = folder / "trainer_state.json"
    if not state_path.is_file():
        raise FileNotFoundError(f"{folder}: not a training checkpoint (no trainer_state.json); "
                                "pass resume=never or a folder from out_dir/checkpoints")
    state = json.loads(state_path.read_text())
    raw = acc.unwrap_model(model)
    weights = _read_tensors(folder / "model.safetensors")
    check_state_dict(raw, weights, folder / "model.safetensors")
    raw.load_state_dict(weights)
    ema.load_state_dict(_read_tensors(folder / "ema.safetensors"), step=state["ema_step"])
    optimizer.load_state_dict(_optimizer_from_files(folder))
    if acc.scaler is not None and state.get("grad_scaler"):
        acc.scaler.load_state_dict(state["grad_scaler"])
    return state


def _resume_folder(cfg: TrainConfig) -> Path | None:
    if cfg.resume == "never":
        if list_checkpoints(cfg.out_dir):
            raise ValueError(f"{cfg.out_dir} already holds checkpoints and resume=never; use resume=auto "
                             "to continue that run, or choose another out_dir")
        return None
    if cfg.resume == "auto":
        return latest_checkpoint(cfg.out_dir)
    folder = Path(cfg.resume)
    if not folder.is_dir():
        raise FileNotFoundError(f"resume={cfg.resume}: checkpoint folder not found")
    return folder


# -- logs ---------------------------------------------------------------------------------------
class _Log:
    """CSV always, TensorBoard when asked; rows past a resumed step (from the interrupted run) go."""

    FIELDS = ["step", "loss", "lr", "grad_norm", "samples", "seconds", "samples_per_s"]

    def __init__(self, out_dir: Path, start: int, tensorboard: bool):
        self.path = out_dir / "log.csv"
        kept = []
        if self.path.is_file() and start > 0:
            with open(self.path, newline="") as f:
                kept = [r for r in csv.DictReader(f) if int(r["step"]) <= start]
        self.file = open(self.path, "w", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=self.FIELDS)
        self.writer.writeheader()
        self.writer.writerows(kept)
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out_dir / "tensorboard"), purge_step=start or None)

    def write(self, row: dict) -> None:
        self.writer.writerow(row)
        self.file.flush()
        if self.tb is not None:
            for k in ("loss", "lr", "grad_norm", "samples_per_s"):
                self.tb.add_scalar(f"train/{k}", row[k], row["step"])

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


# -- the loop -----------------------------------------------------------------------------------
def fit(model: ModelMixin, data, loss_fn: Callable, cfg: TrainConfig, *, run_config=None,
        sample_fn: Callable | None = None, collate_fn: Callable | None = None) -> TrainResult:
    """Train `model` on `data` with `loss_fn(model, batch, generator) -> scalar` for `cfg.steps` steps.

    `model` inside `loss_fn` may be the DDP wrapper: call it, read attributes from your own reference.
    `sample_fn(model, step, folder)` runs every `cfg.sample_every` steps on the main process with the
    EMA weights loaded (eval mode, no grad). `run_config` (the plugin's whole config dataclass) is
    saved as train.yaml beside every checkpoint.
    """
    from accelerate.utils import send_to_device

    if not isinstance(model, ModelMixin):
        raise TypeError(f"fit needs a polydiff ModelMixin model (savable), got {type(model).__name__}")
    check_config(cfg)
    acc = _accelerator(cfg)
    world, rank = acc.num_processes, acc.process_index
    per_step = cfg.grad_accum * world
    if cfg.batch_size % per_step:
        raise ValueError(f"batch_size={cfg.batch_size} must be a multiple of grad_accum x processes "
                         f"= {cfg.grad_accum} x {world}; change batch_size or grad_accum")
    micro = cfg.batch_size // per_step
    out_dir = Path(cfg.out_dir)
    if acc.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)

    # Global RNGs (dropout, ...) seeded per process; not runtime.seed_everything, which also sets
    # PYTHONHASHSEED in os.environ for every child process.
    rank_seed = _mix(cfg.seed, rank, 0x5EED)
    random.seed(rank_seed)
    np.random.seed(rank_seed % 2**32)
    torch.manual_seed(rank_seed)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas,
                                  eps=cfg.adam_eps)
    model, optimizer = acc.prepare(model, optimizer)
    raw = acc.unwrap_model(model)
    ema = EMA(raw, cfg.ema_decay, cfg.ema_warmup)

    step, samples_seen, resumed = 0, 0, _resume_folder(cfg)
    if resumed is not None:
        state = _load_checkpoint(resumed, acc, model, ema, optimizer)
        step, samples_seen = state["step"], state["samples_seen"]
        log.info("resuming from %s (step %d)", resumed, step)
    batches = _batches(data, cfg, micro, world, rank, samples_seen, collate_fn)
    if resumed is not None:  # last, so nothing above shifts the restored RNG streams
        rng_file = resumed / f"rng-rank{rank}.safetensors"
        if rng_file.is_file():
            _rng_from_file(rng_file)
        else:
            log.warning("%s: no RNG state for process %d (process count changed?); global RNGs reseeded",
                        resumed, rank)

    logger = _Log(out_dir, step, cfg.tensorboard) if acc.is_main_process else None
    bar = progress(total=cfg.steps, initial=step, desc="train") if acc.is_main_process else None
    losses, window, last_ckpt = [], [], resumed
    clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
    t0, samples0 = time.perf_counter(), samples_seen
    model.train()
    try:
        while step < cfg.steps:
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            total = torch.zeros((), device=acc.device)
            for m in range(cfg.grad_accum):
                batch = send_to_device(next(batches), acc.device, non_blocking=True)
                gen = torch.Generator(device=acc.device).manual_seed(_mix(cfg.seed, step, m, rank))
                sync = contextlib.nullcontext() if m == cfg.grad_accum - 1 else acc.no_sync(model)
                with sync:
                    with acc.autocast():
                        loss = loss_fn(model, batch, gen)
                    if not (torch.is_tensor(loss) and loss.ndim == 0):
                        raise TypeError(f"loss_fn must return a scalar tensor, got {type(loss).__name__} "
                                        f"{tuple(getattr(loss, 'shape', ()))}")
                    acc.backward(loss / cfg.grad_accum)
                total += loss.detach().float()
            mean_loss = acc.reduce(total / cfg.grad_accum, reduction="mean").item()
            grad_norm = float(acc.clip_grad_norm_(model.parameters(), clip))
            bad = not math.isfinite(mean_loss) or (acc.scaler is None and not math.isfinite(grad_norm))
            if bad:
                what = f"loss {mean_loss}" if not math.isfinite(mean_loss) else f"gradient norm {grad_norm}"
                keep = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
                raise TrainingDiverged(
                    f"training stopped: non-finite {what} at step {step + 1} (lr {lr:.3g}); {keep}. "
                    "Lower lr, set grad_clip, or check the data, then resume with resume=auto.")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            ema.update(raw)
            step += 1
            samples_seen += cfg.batch_size
            losses.append(mean_loss)
            window.append(mean_loss)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{mean_loss:.4g}", refresh=False)
            if logger is not None and (step % cfg.log_every == 0 or step == cfg.steps):
                seconds = time.perf_counter() - t0
                logger.write({"step": step, "loss": sum(window) / len(window), "lr": lr, "grad_norm": grad_norm,
                              "samples": samples_seen, "seconds": round(seconds, 3),
                              "samples_per_s": round((samples_seen - samples0) / max(seconds, 1e-9), 2)})
                window = []
            if sample_fn is not None and cfg.sample_every > 0 and step % cfg.sample_every == 0:
                _run_sample_hook(acc, raw, ema, sample_fn, step, out_dir)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                last_ckpt = _save_checkpoint(acc, model, ema, optimizer, cfg, run_config, step, samples_seen)
    finally:
        if bar is not None:
            bar.close()
        if logger is not None:
            logger.close()
    return TrainResult(model=raw, ema=ema, step=step, checkpoint=last_ckpt, losses=losses)


def _run_sample_hook(acc, raw, ema, sample_fn, step, out_dir):
    # Runs before the checkpoint of this step is written, so RNG draws made here are in the saved
    # state and a resumed run continues the same streams.
    if acc.is_main_process:
        folder = out_dir / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        with ema.apply_to(raw), torch.no_grad():
            raw.eval()
            try:
                sample_fn(raw, step, folder)
            finally:
                raw.train()
