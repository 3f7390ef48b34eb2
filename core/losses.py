"""The diffusion training loss, one for every modality and every parameterisation.

    param = EDMPrecond(net, sigma_data=0.5)            # or VPDenoiser / VEDenoiser / FlowDenoiser
    loss = diffusion_loss(param, x0, {"text": emb}, mask=valid, generator=gen)

Each step: draw a noise level per sample from the wrapper's training distribution (EDM log-normal,
uniform timestep for VP, log-uniform for VE, uniform / logit-normal t for flow matching), build
x = x0 + sigma * eps, run the network through the wrapper, and take the squared error of F against its
own target (eps, x0, v, flow velocity, or EDM's (x0 - c_skip x) / c_out), times a per-sample weight.

Weightings, all written as a multiplier of that native-target squared error:
    "uniform"   1: the usual eps / v / flow MSE; for `EDMPrecond` this is EDM's weighted loss already.
    "min_snr"   min(SNR, gamma) * c_out^2 (Hang et al. 2023): Min-SNR-gamma in x0 space, SNR = 1/sigma^2;
                c_out^2 turns x0 error into F error, giving min(SNR, g)/SNR for eps, min(SNR, g)/(SNR+1) for v.
    "edm"       lambda(sigma) * c_out^2, lambda = (s^2 + sd^2) / (s sd)^2 (Karras et al. 2022).

Works with a network wrapped in DDP: the wrapper calls `net` through its own forward.
"""

from __future__ import annotations

import torch

from .precond import Parameterisation, _bcast, add_noise
from .runtime import randn

WEIGHTINGS = ("uniform", "min_snr", "edm")


def _uniform(n: int, generator, device) -> torch.Tensor:
    """n uniforms in [0, 1) (float64), one per sample from a list of per-sample generators if given."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != n:
            raise ValueError(f"got {len(generator)} generators for a batch of {n}")
        return torch.cat([torch.rand(1, generator=g, device=g.device, dtype=torch.float64).to(device)
                          for g in generator])
    gen_device = generator.device if generator is not None else device
    return torch.rand(n, generator=generator, device=gen_device, dtype=torch.float64).to(device)


def _unwrap(model) -> Parameterisation:
    inner = model
    while not isinstance(inner, Parameterisation):
        nxt = getattr(inner, "module", None) or getattr(inner, "_orig_mod", None)
        if nxt is None:
            raise TypeError(f"diffusion_loss needs a polydiff.core.precond wrapper (EDMPrecond, VPDenoiser, "
                            f"VEDenoiser, FlowDenoiser) around the network, got {type(model).__name__}")
        inner = nxt
    return inner


def loss_weight(param: Parameterisation, sigma: torch.Tensor, weighting: str = "uniform",
                min_snr_gamma: float = 5.0, sigma_data: float | None = None) -> torch.Tensor:
    """Per-sample multiplier (B,) of the native-target squared error; see the module docstring."""
    if weighting == "uniform":
        return torch.ones_like(sigma)
    c_out = torch.as_tensor(param.scalings(sigma)[1], dtype=sigma.dtype, device=sigma.device)
    if weighting == "min_snr":
        return (1 / sigma**2).clamp(max=min_snr_gamma) * c_out**2
    if weighting == "edm":
        sd = sigma_data if sigma_data is not None else getattr(param, "sigma_data", 0.5)
        return (sigma**2 + sd**2) / (sigma * sd) ** 2 * c_out**2
    raise ValueError(f"unknown loss weighting {weighting!r}; use one of {WEIGHTINGS}")


def diffusion_loss(model, x0: torch.Tensor, cond: dict | None = None, *, weighting: str = "uniform",
                   min_snr_gamma: float = 5.0, mask: torch.Tensor | None = None, generator=None,
                   sigma: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                   reduction: str = "mean") -> torch.Tensor:
    """Denoising loss of `model` (a precond wrapper, possibly inside DDP) on a clean batch x0: (B, ...).

    cond: keyword arguments for the network. mask: 1 where x0 is real data, broadcastable to x0 (e.g.
    (B, 1, T) for padded sequences): the mean is over valid elements only. generator: one
    torch.Generator, or a list of B (per-sample streams). sigma (B,) / noise (like x0) override the draws.
    reduction: "mean" (a scalar) or "none" (per-sample losses (B,), each the mean over its valid elements).
    """
    param = _unwrap(model)
    B = x0.shape[0]
    if sigma is None:
        sigma = param.training_sigma(_uniform(B, generator, x0.device))
    sigma = torch.as_tensor(sigma, device=x0.device).to(x0.dtype).expand(B)
    if noise is None:
        noise = randn(x0.shape, generator, device=x0.device, dtype=x0.dtype)
    x = add_noise(x0, noise, sigma)
    F = model(x, sigma, net_output=True, **(cond or {}))
    err = (F.float() - param.target(x0, noise, sigma).float()) ** 2       # (B, ...)
    w = _bcast(loss_weight(param, sigma, weighting, min_snr_gamma).float(), err)
    if mask is None:
        mask = torch.ones((), device=err.device)
    mask = mask.to(err.dtype).expand_as(err)
    if reduction == "none":
        dims = tuple(range(1, err.ndim))
        return (w * err * mask).sum(dims) / mask.sum(dims).clamp(min=1)
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    return (w * err * mask).sum() / mask.sum().clamp(min=1)
