"""Distribution Matching Distillation: a many-step teacher made into a one- (or few-) step generator.

DMD (Yin et al., CVPR 2024) trains a generator G(z) = D_student(sigma_max z, sigma_max), initialised
from the teacher denoiser, with two losses:

- distribution matching: noise a student sample x to a level sigma, ask the teacher ("real score") and
  a "fake score" model (a copy of the teacher, trained online with the ordinary denoising loss on the
  student's own samples) for their x0 estimates, and push x along their difference,
      grad_x = (fake_x0 - real_x0) / mean|x - real_x0|        (per sample; DMD's normalisation)
  i.e. along s_real - s_fake, the gradient of KL(p_student || p_data) diffused to sigma. It is applied
  through the surrogate 0.5 |x - stopgrad(x - grad)|^2, whose derivative in x is exactly grad;
- regression on a cached set of (noise, teacher ODE output) pairs (MSE or L1; DMD uses LPIPS, whose
  weights are not available here), which anchors the student to the teacher's noise-to-data map.

DMD2 (Yin et al., NeurIPS 2024) options: `regression_weight=0` (no regression set), the two-time-scale
update (`fake_steps_per_gen` fake-score steps per generator step) and a few-step student trained with
backward simulation: the input of step k is made by running the student's own earlier steps and
re-noising, x_k = G(x_{k-1}, s_{k-1}) + s_k z, so training sees what sampling will see.

Both trainable models live in one `DMDPair` module, so the shared trainer (`polydiff.core.train.fit`)
runs the loop with its EMA, checkpoints, exact resume and DDP unchanged: each trainer step is one
fake-score step, and a generator step on every `fake_steps_per_gen`-th one (the generator gets no
gradient otherwise, so AdamW leaves it alone). The exported student is a checkpoint of the teacher's
own class: a sampler run on [sigma_max, 0] (`--steps 1`) returns G(z) exactly.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Literal

import torch
from torch import nn

from .checkpoint import CheckpointError, ModelMixin, save_pretrained
from .losses import _unwrap, diffusion_loss
from .precond import add_noise
from .runtime import randn
from .samplers import sample
from .schedules import karras_sigmas, start_latent
from .train import TrainConfig, fit

# Few-step sampling and backward simulation: x_next = D + s_next z. That is euler_ancestral with the
# whole step made of fresh noise (sigma_up = s_next, sigma_down = 0), which any eta this large gives.
RENOISE = {"method": "euler_ancestral", "eta": 1e6}


@dataclass
class DMDConfig:
    """What distillation adds to the trainer's knobs."""

    steps: int = 1                       # student steps: 1 (DMD) or 2-4 (DMD2 backward simulation)
    sigma_max: float | None = None       # student input level; None: the teacher's sampling sigma_max
    student_sigma_min: float = 0.5       # last level of a few-step student's grid (karras, rho)
    rho: float = 7.0
    t_min: float = 0.02                  # distribution-matching noise levels: quantiles [t_min, t_max]
    t_max: float = 0.98                  # of the fake score's training sigma distribution
    dm_weight: float = 1.0
    regression_weight: float = 0.25      # 0: DMD2's no-regression variant (no teacher pairs made)
    regression_loss: Literal["mse", "l1"] = "mse"
    pairs: int = 8192                    # size of the cached (noise, teacher output) set
    teacher_method: str = "heun"         # core sampler making the regression targets
    teacher_steps: int = 40
    fake_steps_per_gen: int = 5          # DMD2 two-time-scale update (5 as DMD2; 1 = original DMD)
    fake_weighting: str = "uniform"      # weighting of the fake score's diffusion loss
    cfg_scale: float = 1.0               # classifier-free guidance of the real score
    cfg_rescale: float = 0.0


@dataclass
class DistillRun:
    """The run config of `polydiff distill` (YAML file + key=value overrides)."""

    dmd: DMDConfig = field(default_factory=DMDConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-4, warmup_steps=100, steps=2000,
                                                                   checkpoint_every=500))


@dataclass
class Teacher:
    """What a plugin hands to distillation (`plugin.extra["distill"](folder, device=) -> Teacher`).

    denoiser: the teacher's precond wrapper (`EDMPrecond`, `VPDenoiser`, ...); it must be a `ModelMixin`
        itself or hold one as `.net` (that is what the student checkpoint saves).
    shape: one sample's shape, e.g. (C, T). sigma_min / sigma_max: the plugin's sampling range.
    conditions(n, generator) -> dict of (n, ...) tensors: training conditions (None: unconditional).
    null_condition(cond) -> dict: the unconditional input for classifier-free guidance of the real score.
    """

    denoiser: nn.Module
    shape: tuple[int, ...]
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    conditions: Callable[[int, torch.Generator], dict] | None = None
    null_condition: Callable[[dict], dict] | None = None
    sigma_data: float = 1.0


# ---------------------------------------------------------------------- the losses

def dmd_gradient(x: torch.Tensor, real_x0: torch.Tensor, fake_x0: torch.Tensor) -> torch.Tensor:
    """DMD's gradient on student samples x: (B, ...): (fake_x0 - real_x0) / mean|x - real_x0| per sample.
    The normaliser makes the step size independent of sigma and of how far the sample is from data."""
    dims = tuple(range(1, x.ndim))
    scale = (x - real_x0).abs().mean(dims, keepdim=True).clamp_min(1e-12)
    return torch.nan_to_num((fake_x0 - real_x0) / scale)


def surrogate_loss(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Per-sample 0.5 |x - stopgrad(x - grad)|^2: (B,). d(sum)/dx = grad exactly."""
    return 0.5 * (x - (x - grad).detach()).pow(2).flatten(1).sum(1)


def distribution_matching_loss(x, real, fake, sigma, noise, cond: dict | None = None,
                               real_cond: dict | None = None) -> torch.Tensor:
    """The DM term on student samples x: (B, ...) at levels sigma: (B,) with noise like x.

    real / fake: denoisers D(x, sigma, **cond); neither gets a gradient. real_cond (default cond): the
    real score's keywords ({} when it is a CFG wrapper that holds its conditions). Returns the mean over elements
    of the surrogate (as DMD2), i.e. d loss / dx = grad / x.numel(), on the scale of an MSE."""
    cond = cond or {}
    with torch.no_grad():
        x_t = add_noise(x.detach(), noise, sigma)
        real_x0 = real(x_t, sigma, **(cond if real_cond is None else real_cond))
        fake_x0 = fake(x_t, sigma, **cond)
        grad = dmd_gradient(x.detach(), real_x0.to(x.dtype), fake_x0.to(x.dtype))
    return surrogate_loss(x, grad).sum() / x.numel()


def fake_score_loss(fake, x, cond: dict | None = None, *, generator=None, weighting: str = "uniform"):
    """The fake score's loss: the core denoising loss on the student's samples, detached, so it trains
    the fake score only and never the generator."""
    return diffusion_loss(fake, x.detach(), cond, generator=generator, weighting=weighting)


def regression_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    if kind == "mse":
        return (pred - target).pow(2).mean()
    if kind == "l1":
        return (pred - target).abs().mean()
    raise ValueError(f"regression_loss must be 'mse' or 'l1', got {kind!r}")


# ---------------------------------------------------------------------- student steps

def student_sigmas(steps: int, sigma_max: float, sigma_min: float = 0.5, rho: float = 7.0) -> torch.Tensor:
    """The student's grid, n + 1 values ending in 0: [sigma_max, 0] for one step, karras otherwise."""
    if not 1 <= steps <= 8:
        raise ValueError(f"student steps must be 1..8 (DMD2 uses 1-4), got {steps}")
    if steps == 1:
        return torch.tensor([sigma_max, 0.0], dtype=torch.float64)
    if math.isinf(sigma_max):
        raise ValueError("a few-step student needs a finite sigma_max (set dmd.sigma_max)")
    return karras_sigmas(steps, sigma_min, sigma_max, rho)


def backward_simulation(student, noise: torch.Tensor, sigmas: torch.Tensor, k: int, *, generator=None,
                        cond: dict | None = None) -> torch.Tensor:
    """The student's input at step k: its own first k steps run from noise (no gradient), each ending in
    fresh noise at the next level, so the result is G(...) + sigmas[k] z. k = 0: the start latent."""
    x = start_latent(noise, sigmas)
    if k == 0:
        return x
    with torch.no_grad():
        return sample(student, x, sigmas[:k + 1], generator=generator, cond=cond, progress=False, **RENOISE)


def generate(student, noise: torch.Tensor, sigmas: torch.Tensor, *, generator=None, cond=None) -> torch.Tensor:
    """Sample a distilled student: one denoiser call per step of its grid (a core sampler run)."""
    return sample(student, start_latent(noise, sigmas), sigmas, generator=generator, cond=cond,
                  progress=False, **RENOISE)


# ---------------------------------------------------------------------- regression pairs

@torch.no_grad()
def teacher_pairs(teacher, noise: torch.Tensor, sigmas: torch.Tensor, method: str = "heun",
                  cond: dict | None = None, batch: int = 1024) -> torch.Tensor:
    """The teacher's ODE outputs (N, ...) from unit noise (N, ...), in batches, with a core sampler."""
    out = []
    for i in range(0, noise.shape[0], batch):
        c = {k: v[i:i + batch] for k, v in (cond or {}).items()}
        out.append(sample(teacher, start_latent(noise[i:i + batch], sigmas), sigmas, method, cond=c,
                          progress=False))
    return torch.cat(out)


class PairSet(torch.utils.data.Dataset):
    """Items {"noise", "target"?, "cond"?} for the trainer; without targets (no-regression) the noise
    only sets the batch size and device, and conditions still come with it."""

    def __init__(self, noise: torch.Tensor, target: torch.Tensor | None = None, cond: dict | None = None):
        self.noise, self.target, self.cond = noise, target, cond or {}

    def __len__(self):
        return self.noise.shape[0]

    def __getitem__(self, i):
        item = {"noise": self.noise[i]}
        if self.target is not None:
            item["target"] = self.target[i]
        if self.cond:
            item["cond"] = {k: v[i] for k, v in self.cond.items()}
        return item


# ---------------------------------------------------------------------- the trained pair

def savable(model: nn.Module) -> ModelMixin:
    """The part of a denoiser a checkpoint holds: the wrapper if it is a ModelMixin, else its `.net`."""
    if isinstance(model, ModelMixin):
        return model
    if isinstance(getattr(model, "net", None), ModelMixin):
        return model.net
    raise TypeError(f"cannot distil a {type(model).__name__}: the teacher must be a ModelMixin denoiser or a "
                    "precond wrapper (EDMPrecond, VPDenoiser, ...) around a ModelMixin network")


class DMDPair(ModelMixin):
    """Student generator + fake score: the one module the shared trainer optimises.

    Build with `DMDPair.from_teacher(...)`. The config records the options and the model classes; a
    training checkpoint resumes through `distill` / `fit`, and the student is exported on its own by
    `export_student` (that folder is what samplers load)."""

    def __init__(self, options: dict, student_class: str = "", fake_class: str = ""):
        super().__init__()
        self.options = DMDConfig(**options)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))   # forward calls (saved: resume)
        self.student: nn.Module | None = None
        self.fake: nn.Module | None = None
        self.real: Callable | None = None            # the teacher denoiser (not trained, not saved)
        self.null_condition: Callable | None = None
        self.sigma_data, self.grad_accum = 1.0, 1
        self.sigmas = torch.zeros(0)

    @classmethod
    def from_teacher(cls, teacher: nn.Module, options: DMDConfig, *, sigma_max: float, student=None,
                     fake=None, real=None, null_condition=None, sigma_data: float = 1.0,
                     grad_accum: int = 1) -> "DMDPair":
        """Student and fake score are copies of `teacher` unless given; `real` (default: the teacher)
        is any denoiser, e.g. the closed-form one of a `GaussianMixture`."""
        student = student if student is not None else copy.deepcopy(teacher)
        fake = fake if fake is not None else copy.deepcopy(teacher)
        for m in (student, fake):
            m.requires_grad_(True).train()
        cfg = replace(options, sigma_max=sigma_max)
        pair = cls(cfg.__dict__, type(savable(student)).__qualname__, type(savable(fake)).__qualname__)
        pair.student, pair.fake = student, fake
        # plain attribute, not a submodule: the teacher is neither trained nor saved with the pair
        object.__setattr__(pair, "real", real if real is not None else teacher)
        pair.null_condition, pair.sigma_data, pair.grad_accum = null_condition, sigma_data, grad_accum
        pair.sigmas = student_sigmas(cfg.steps, sigma_max, cfg.student_sigma_min, cfg.rho)
        return pair

    @classmethod
    def from_pretrained(cls, folder, device="cpu", use_ema=False):
        raise CheckpointError(f"{folder}: a DMD training checkpoint is resumed by polydiff.core.distill.distill "
                              "(same out_dir); load the exported student folder to sample")

    def _real(self, cond: dict):
        """The real score and the keywords to call it with (CFG holds its conditions itself)."""
        o = self.options
        if o.cfg_scale == 1.0 or not cond:
            return self.real, cond
        if self.null_condition is None:
            raise ValueError("cfg_scale != 1 needs the teacher's null_condition (Teacher.null_condition)")
        from .guidance import cfg_denoiser
        return cfg_denoiser(self.real, o.cfg_scale, cond, self.null_condition(cond), rescale=o.cfg_rescale,
                            sigma_data=self.sigma_data), {}

    def _dm_sigma(self, n: int, generator, like: torch.Tensor) -> torch.Tensor:
        o = self.options
        gdev = generator.device if generator is not None else like.device
        u = torch.rand(n, generator=generator, device=gdev, dtype=torch.float64).to(like.device)
        return _unwrap(self.fake).training_sigma(o.t_min + (o.t_max - o.t_min) * u).to(like.dtype)

    def forward(self, batch: dict, generator=None) -> torch.Tensor:
        """One trainer step's loss: fake-score loss, plus the generator's losses on generator steps."""
        o = self.options
        noise, target, cond = batch["noise"], batch.get("target"), batch.get("cond") or {}
        gen_step = int(self.calls) // self.grad_accum % o.fake_steps_per_gen == 0
        self.calls += 1
        B, sigmas = noise.shape[0], self.sigmas
        k = 0 if o.steps == 1 else int(torch.randint(o.steps, (1,), generator=generator,
                                                     device=generator.device if generator is not None else "cpu"))
        z = randn(noise.shape, generator, device=noise.device, dtype=noise.dtype)
        x_in = backward_simulation(self.student, z, sigmas, k, generator=generator, cond=cond)
        with torch.set_grad_enabled(gen_step and torch.is_grad_enabled()):
            x = self.student(x_in, noise.new_full((B,), float(sigmas[k])), **cond)    # (B, ...)
        losses = {"fake": fake_score_loss(self.fake, x, cond, generator=generator, weighting=o.fake_weighting)}
        if gen_step and o.dm_weight > 0:
            eps = randn(x.shape, generator, device=x.device, dtype=x.dtype)
            real, real_cond = self._real(cond)
            losses["dm"] = o.dm_weight * distribution_matching_loss(
                x, real, self.fake, self._dm_sigma(B, generator, x), eps, cond, real_cond)
        if gen_step and o.regression_weight > 0 and target is not None:
            pred = self.student(start_latent(noise, sigmas), noise.new_full((B,), float(sigmas[0])), **cond)
            losses["regression"] = o.regression_weight * regression_loss(pred, target, o.regression_loss)
        self.last = {k: float(v.detach()) for k, v in losses.items()}
        return sum(losses.values())


def _pair_loss(model, batch, generator):
    return model(batch, generator)


def export_student(pair: DMDPair, folder, ema=None, **meta) -> Path:
    """Write the student as a checkpoint of the teacher's class (+ `distilled` info in config.json),
    with its EMA weights as ema.safetensors when the trainer's `ema` is given."""
    net = savable(pair.student)
    prefix = next(name for name, m in pair.named_modules() if m is net) + "."
    ema_state = None
    if ema is not None:
        ema_state = {k[len(prefix):]: v for k, v in ema.state_dict().items() if k.startswith(prefix)}
    o = pair.options
    info = {"method": "dmd", "steps": o.steps, "sigmas": [float(s) for s in pair.sigmas],
            "sampler": RENOISE["method"] if o.steps > 1 else "any", **meta}
    if o.steps > 1:
        info["sampler_options"] = {"eta": RENOISE["eta"]}
    return save_pretrained(net, folder, ema_state=ema_state, distilled=info)


# ---------------------------------------------------------------------- the whole recipe

def distill(teacher: Teacher, output, run: DistillRun | None = None, *, real=None, student=None, fake=None,
            sample_fn=None):
    """Distil `teacher` into a `run.dmd.steps`-step student saved at `output` (a checkpoint folder of the
    teacher's class). The run (regression pairs cache, trainer checkpoints, log.csv) lives in
    `output/dmd-run` and resumes from there. Returns (student folder, trainer result)."""
    run = run or DistillRun()
    o, output = run.dmd, Path(output)
    work = output / "dmd-run"
    # On fake-score-only steps the generator takes no part in the loss: under DDP that needs
    # find_unused_parameters, and DDP then leaves its (globally unused) grads None, so AdamW skips it.
    train = replace(run.train, out_dir=str(work),
                    ddp_find_unused=run.train.ddp_find_unused or o.fake_steps_per_gen > 1)
    sigma_max = o.sigma_max if o.sigma_max is not None else teacher.sigma_max
    device = next(savable(teacher.denoiser).parameters()).device
    teacher.denoiser.eval().requires_grad_(False)
    data = _pair_set(teacher, o, sigma_max, work, train.seed, device)
    pair = DMDPair.from_teacher(teacher.denoiser, o, sigma_max=sigma_max, student=student, fake=fake, real=real,
                                null_condition=teacher.null_condition, sigma_data=teacher.sigma_data,
                                grad_accum=train.grad_accum)
    result = fit(pair, data, _pair_loss, train, run_config=run, sample_fn=sample_fn)
    folder = export_student(result.model, output, ema=result.ema, teacher_sigma_min=teacher.sigma_min)
    return folder, result


def _pair_set(teacher: Teacher, o: DMDConfig, sigma_max: float, work: Path, seed: int, device) -> PairSet:
    """The (noise, teacher output, condition) set, made once and cached in work/pairs.safetensors."""
    from safetensors.torch import load_file, save_file

    from .checkpoint import _atomic_write_bytes

    path = work / "pairs.safetensors"
    if path.is_file():
        t = load_file(str(path), device=str(device))
        cond = {k[5:]: v for k, v in t.items() if k.startswith("cond.")}
        return PairSet(t["noise"], t.get("target"), cond)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(o.pairs, *teacher.shape, generator=g).to(device)
    cond = {k: v.to(device) for k, v in (teacher.conditions(o.pairs, g) if teacher.conditions else {}).items()}
    tensors = {"noise": noise, **{f"cond.{k}": v for k, v in cond.items()}}
    target = None
    if o.regression_weight > 0:
        if math.isinf(sigma_max):
            raise ValueError("regression pairs need a finite sigma_max; set dmd.sigma_max or dmd.regression_weight=0")
        sigmas = karras_sigmas(o.teacher_steps, teacher.sigma_min, sigma_max)
        target = teacher_pairs(teacher.denoiser, noise, sigmas, o.teacher_method, cond)
        tensors["target"] = target
    work.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(path, lambda p: save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, p))
    return PairSet(noise, target, cond)
