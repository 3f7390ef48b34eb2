"""The one checkpoint format: a folder with `config.json` and safetensors weights.

    folder/
      config.json          {"class": "pkg.module:Name", "format_version": 1, "config": {...ctor args}}
      model.safetensors    the weights
      ema.safetensors      optional EMA weights (same keys)
      train.json|yaml      optional: the training config that produced it

A model class opts in by subclassing `ModelMixin`; its constructor arguments are captured on
construction, so `save_pretrained` needs nothing else. Nothing here ever unpickles: weights are read
with safetensors only, and every way a folder can be wrong raises `CheckpointError` naming the file.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .runtime import atomic_write

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
EMA_NAME = "ema.safetensors"


class CheckpointError(RuntimeError):
    """A checkpoint folder or file is missing, damaged or does not fit the model."""


_REGISTRY: dict[str, type] = {}


def _class_id(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


class ModelMixin(torch.nn.Module):
    """An `nn.Module` whose constructor arguments are recorded in `self.config` (JSON-able values)."""

    config: dict[str, Any]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _REGISTRY[_class_id(cls)] = cls
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        sig = inspect.signature(init)

        @functools.wraps(init)
        def wrapped(self, *args, **kw):
            # Only the outermost constructor records (a subclass calling super().__init__ must not
            # overwrite its own arguments with its parent's).
            outer = not getattr(self, "_recording_config", False)
            if outer:
                object.__setattr__(self, "_recording_config", True)
            try:
                init(self, *args, **kw)
            finally:
                if outer:
                    bound = sig.bind(self, *args, **kw)
                    bound.apply_defaults()
                    cfg = dict(bound.arguments)
                    cfg.pop("self")
                    for name, p in sig.parameters.items():
                        if p.kind is p.VAR_KEYWORD:
                            cfg.update(cfg.pop(name, {}))
                        elif p.kind is p.VAR_POSITIONAL:
                            raise TypeError(f"{cls.__name__}: *args constructors cannot be saved")
                    object.__setattr__(self, "config", cfg)
                    object.__setattr__(self, "_recording_config", False)

        cls.__init__ = wrapped

    def save_pretrained(self, folder, ema_state: dict[str, torch.Tensor] | None = None, **extra) -> Path:
        return save_pretrained(self, folder, ema_state=ema_state, **extra)

    @classmethod
    def from_pretrained(cls, folder, device="cpu", use_ema: bool = False):
        return load_pretrained(folder, cls=cls, device=device, use_ema=use_ema)


def _atomic_write_bytes(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: no half-written files."""
    atomic_write(path, lambda tmp: write(str(tmp)))


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage and non-contiguous tensors; copies cost nothing at our sizes.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_pretrained(model: ModelMixin, folder, ema_state=None, **extra) -> Path:
    """Write `model` (and optionally EMA weights) to `folder`; extra JSON-able keys go to config.json."""
    if not isinstance(model, ModelMixin):
        raise TypeError(f"{type(model).__name__} is not a polydiff ModelMixin; it cannot be saved")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"class": _class_id(type(model)), "format_version": FORMAT_VERSION, "config": model.config, **extra}
    try:
        text = json.dumps(meta, indent=2, sort_keys=True)
    except TypeError as err:
        raise CheckpointError(f"{type(model).__name__} config is not JSON-serialisable: {err}") from err
    _atomic_write_bytes(folder / WEIGHTS_NAME, lambda p: save_file(_contiguous(model.state_dict()), p))
    if ema_state is not None:
        _atomic_write_bytes(folder / EMA_NAME, lambda p: save_file(_contiguous(ema_state), p))
    _atomic_write_bytes(folder / CONFIG_NAME, lambda p: Path(p).write_text(text + "\n"))
    return folder


def read_config(folder) -> dict:
    """Read and validate `config.json` of a checkpoint folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: checkpoint folder not found (expected a folder with {CONFIG_NAME})")
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; a checkpoint folder needs {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(meta, dict) or not {"class", "format_version", "config"} <= set(meta):
        raise CheckpointError(f"{path}: needs the keys 'class', 'format_version' and 'config'")
    if meta["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {meta['format_version']!r}, this polydiff reads {FORMAT_VERSION}; "
            "upgrade polydiff or re-export the checkpoint"
        )
    return meta


def _resolve_class(class_id: str, path: Path) -> type:
    if class_id in _REGISTRY:
        return _REGISTRY[class_id]
    module, _, qualname = class_id.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise CheckpointError(f"{path}: model class {class_id!r} not found ({err})") from err
    if not (isinstance(obj, type) and issubclass(obj, ModelMixin)):
        raise CheckpointError(f"{path}: {class_id!r} is not a polydiff model class")
    return obj


def read_weights(path) -> dict[str, torch.Tensor]:
    """Load a safetensors file; anything else (a pickle, a torch zip, a truncated file) is refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        with open(path, "rb") as f:
            head = f.read(2)
        # Only now look for pickle / torch.save magic: a valid safetensors header length may start
        # with any byte, so the check must not come first.
        if head[:2] == b"PK" or head[:1] == b"\x80":
            raise CheckpointError(
                f"{path}: this is a pickle / torch.save archive, not safetensors; polydiff never unpickles. "
                "Convert it with safetensors.torch.save_file on a machine you trust."
            ) from err
        raise CheckpointError(f"{path}: damaged or truncated safetensors file ({err})") from err


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Raise one clear error listing missing / unexpected keys and shape mismatches."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if own[k].shape != state[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    if shapes:
        problems.append(f"shape mismatch {shapes[:5]}{' ...' if len(shapes) > 5 else ''}")
    if problems:
        raise CheckpointError(f"{path}: weights do not fit {type(model).__name__}: " + "; ".join(problems))


def load_pretrained(folder, cls: type | None = None, device="cpu", use_ema: bool = False):
    """Build the model recorded in `folder/config.json` and load its weights (EMA ones if asked)."""
    folder = Path(folder)
    meta = read_config(folder)
    cfg_path = folder / CONFIG_NAME
    model_cls = _resolve_class(meta["class"], cfg_path)
    if cls is not None and not issubclass(model_cls, cls):
        raise CheckpointError(
            f"{cfg_path}: holds a {meta['class']}, not a {_class_id(cls)}; point to the right checkpoint"
        )
    try:
        model = model_cls(**meta["config"])
    except TypeError as err:
        raise CheckpointError(f"{cfg_path}: config does not fit {meta['class']} ({err})") from err
    weights = folder / (EMA_NAME if use_ema else WEIGHTS_NAME)
    state = read_weights(weights)
    check_state_dict(model, state, weights)
    model.load_state_dict(state)
    return model.to(device).eval()


def find_checkpoints(folder) -> dict[str, Path]:
    """{name: path} of the checkpoint folders directly inside `folder` (a plugin's shipped ones)."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {p.name: p for p in sorted(folder.iterdir()) if (p / CONFIG_NAME).is_file()}
