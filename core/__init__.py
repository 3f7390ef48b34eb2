"""polydiff.core: the modality-agnostic diffusion engine (nothing here imports a plugin)."""

from .checkpoint import CheckpointError, ModelMixin, load_pretrained, save_pretrained
from .losses import diffusion_loss
from .precond import EDMPrecond, FlowDenoiser, VEDenoiser, VPDenoiser
from .runtime import default_device, generators, resolve_device, seed_everything
from .samplers import sample
from .schedules import ContinuousVP, DiscreteSchedule, karras_sigmas
from .stepopt import optimize_sigmas

__all__ = [
    "CheckpointError",
    "ContinuousVP",
    "DiscreteSchedule",
    "EDMPrecond",
    "FlowDenoiser",
    "ModelMixin",
    "VEDenoiser",
    "VPDenoiser",
    "default_device",
    "diffusion_loss",
    "generators",
    "karras_sigmas",
    "load_pretrained",
    "optimize_sigmas",
    "resolve_device",
    "sample",
    "save_pretrained",
    "seed_everything",
]
