"""Device choice and seeding, shared by every command.

A seeded run on the CPU is bit-for-bit reproducible: `seed_everything` seeds Python, NumPy and torch,
and samplers take explicit `torch.Generator`s (one per sample, see `generators`) so that a sample does
not depend on its batch size or position.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


class DeviceError(ValueError):
    """A device the user asked for is not available."""


def default_device() -> torch.device:
    """cuda > mps > cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """`None` or "auto" picks `default_device()`; anything else must exist here."""
    if name is None or (isinstance(name, str) and name.lower() == "auto"):
        return default_device()
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise DeviceError(f"unknown device {name!r}; use cpu, cuda, cuda:N, mps or auto") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} asked for but CUDA is not available here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"device {name!r} does not exist ({torch.cuda.device_count()} CUDA devices)")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError(f"device {name!r} asked for but MPS is not available here; use --device cpu")
    return device


def seed_everything(seed: int) -> None:
    """Seed every global RNG a run may touch (Python, NumPy, torch on all devices)."""
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be in [0, 2**63), got {seed}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def generators(seed: int, n: int, device: str | torch.device = "cpu") -> list[torch.Generator]:
    """`n` independent generators, the i-th seeded from (seed, i): sample i is the same in any batch."""
    out = []
    for i in range(n):
        g = torch.Generator(device=torch.device(device))
        g.manual_seed((seed * 1_000_003 + i) % 2**63)
        out.append(g)
    return out


def randn(shape, generator=None, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise of `shape` (B, ...). `generator` may be one generator or a list of B
    generators (one per sample), which makes sample i independent of the batch it sits in."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}")
        return torch.cat(
            [torch.randn((1, *shape[1:]), generator=g, device=g.device, dtype=dtype).to(device)
             for g in generator]
        )
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gen_device, dtype=dtype).to(device)


def atomic_write(path, write: Callable[[Path], object]) -> Path:
    """Call write(tmp) on a temporary file beside `path` (its name ends in path's own suffix, so writers
    that go by the extension pick the right format), then rename it over `path`: a reader never sees a
    half-written file and a failure leaves nothing behind. The file gets a normal mode (0666 less the
    umask), not mkstemp's 0600, so a page or a server can read what the user wrote."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
