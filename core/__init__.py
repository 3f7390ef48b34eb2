"""polydiff.core: the modality-agnostic diffusion engine (nothing here imports a plugin)."""

from .checkpoint import CheckpointError, ModelMixin, load_pretrained, save_pretrained
from .runtime import default_device, generators, resolve_device, seed_everything

__all__ = [
    "CheckpointError",
    "ModelMixin",
    "default_device",
    "generators",
    "load_pretrained",
    "resolve_device",
    "save_pretrained",
    "seed_everything",
]
