"""Exponential moving average of a model's weights, with warm-up.

After optimizer step t (t = 0, 1, 2, ... counts the updates already made) every floating-point entry of
the model's state dict is averaged

    ema <- d_t * ema + (1 - d_t) * param,    d_t = min(decay, (1 + t) / (10 + t))

The warm-up factor (1 + t) / (10 + t) is the one TensorFlow's ExponentialMovingAverage uses with
`num_updates`: early on the average forgets its random initial value quickly (d_0 = 0.1), later the
target `decay` takes over (for decay = 0.999 from t = 8990 on). `warmup=False` uses d_t = decay
throughout. Integer buffers (counters, indices) are copied, not averaged.

The shadow weights are kept in float32 whatever the model's dtype, under the model's own state-dict
keys, so `ema.state_dict()` is exactly what `save_pretrained(ema_state=...)` and `ema.safetensors` hold.
"""

from __future__ import annotations

import contextlib

import torch


def ema_decay(step: int, decay: float, warmup: bool = True) -> float:
    """The decay used for update number `step` (0-based)."""
    if not warmup:
        return decay
    return min(decay, (1 + step) / (10 + step))


class EMA:
    """EMA of `model`'s weights. Call `update(model)` after each optimizer step."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.step = 0
        self.shadow = {k: _shadow_copy(v) for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = ema_decay(self.step, self.decay, self.warmup)
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if s.is_floating_point():
                s.lerp_(v.detach().to(s.dtype), 1.0 - d)  # s + (1 - d) (v - s) = d s + (1 - d) v
            else:
                s.copy_(v)
        self.step += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights under the model's keys (float32 on the shadow's device)."""
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor], step: int) -> None:
        missing = sorted(set(self.shadow) - set(state))
        unexpected = sorted(set(state) - set(self.shadow))
        if missing or unexpected:
            raise KeyError(f"EMA state does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        for k, v in state.items():
            self.shadow[k].copy_(v)
        self.step = step

    def to(self, device) -> "EMA":
        self.shadow = {k: v.to(device) for k, v in self.shadow.items()}
        return self

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        """Overwrite `model`'s weights with the averaged ones (cast to the model's dtypes)."""
        own = model.state_dict()
        model.load_state_dict({k: v.to(device=own[k].device, dtype=own[k].dtype) for k, v in self.shadow.items()})

    @contextlib.contextmanager
    def apply_to(self, model: torch.nn.Module):
        """Inside the block `model` holds the EMA weights; its own weights come back afterwards."""
        backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.copy_to(model)
        try:
            yield model
        finally:
            model.load_state_dict(backup)


def _shadow_copy(v: torch.Tensor) -> torch.Tensor:
    v = v.detach()
    return v.to(torch.float32).clone() if v.is_floating_point() else v.clone()
