"""Guidance and masks as denoiser wrappers: each returns a new `D(x, sigma, **cond) -> x0_hat`, so they
compose with every sampler (and with each other) without any sampler knowing about them.

- `cfg_denoiser`: classifier-free guidance D_u + w (D_c - D_u) on x0 predictions, with guidance rescale
  (Lin et al. 2023), a guidance interval in sigma (Kynkaanniemi et al. 2024) and negative conditioning.
- `masked_denoiser`: inpainting / continuation / in-betweening by replacement: the known region of the
  input is replaced by the known data noised to the current sigma, and the known region of the output
  is the known data itself.
- `masked_sample`: `sample` around `masked_denoiser`, with RePaint-style resampling (Lugmayr et al. 2022)
  as an option, and a final paste so the known region of the result is the known data bit for bit.

Why resampling is a helper and not a wrapper: RePaint goes back up in noise (x_{t-1} -> x_t) after a
step, which changes the sampler's state x; a denoiser wrapper only sees (x, sigma) and cannot move the
sampler. Since samplers are pure functions of a sigma grid, resampling is `sample` run on a slice of the
grid, followed by the exact forward (VE) transition back up, x_hi = x_lo + sqrt(s_hi^2 - s_lo^2) z,
repeated. That works for every sampler; multistep samplers restart their history on each slice
(first order on its first step), which costs accuracy on coarse grids but keeps them pure.
"""

from __future__ import annotations

import math

import torch

from .runtime import randn


def _per_sample(v, x: torch.Tensor) -> torch.Tensor:
    """A float, 0-d or (B,) tensor -> (B, 1, ..., 1) in x's dtype and device."""
    v = torch.as_tensor(v, dtype=x.dtype, device=x.device)
    return v.reshape(-1, *([1] * (x.ndim - 1))).expand(x.shape[0], *([1] * (x.ndim - 1)))


def _batchable(cond: dict, uncond: dict, batch: int) -> bool:
    """Can cond and uncond go through the denoiser as one doubled batch? Same keys; tensors of the same
    shape with the batch first; anything else identical."""
    if cond.keys() != uncond.keys():
        return False
    for key, a in cond.items():
        b = uncond[key]
        if torch.is_tensor(a) or torch.is_tensor(b):
            if not (torch.is_tensor(a) and torch.is_tensor(b)) or a.shape != b.shape or a.ndim == 0 \
                    or a.shape[0] != batch or a.dtype != b.dtype:
                return False
        elif a is not b and a != b:
            return False
    return True


def _cat_cond(cond: dict, uncond: dict) -> dict:
    return {k: torch.cat([v, uncond[k]]) if torch.is_tensor(v) else v for k, v in cond.items()}


def _rescale(guided, d_cond, x, sigma, rescale, sigma_data):
    """Guidance rescale (Lin et al. 2023, sec. 3.4): match the per-sample std of the guided prediction to
    the conditional one, then mix with weight `rescale`. Done in v-prediction space as in the paper
    (v = alpha eps - sigma_vp x0 / sigma_data for data std sigma_data); v is affine in x0 given
    (x, sigma), v = a x - b x0 up to a positive factor, so we map there and back exactly."""
    s = _per_sample(sigma, x).clamp(1e-12, 1e8)                # finite at sigma = inf (pure-noise start)
    a = sigma_data / s
    b = sigma_data / s + s / sigma_data
    v_cfg, v_cond = a * x - b * guided, a * x - b * d_cond
    dims = tuple(range(1, x.ndim))
    ratio = v_cond.std(dim=dims, keepdim=True) / v_cfg.std(dim=dims, keepdim=True).clamp_min(1e-12)
    v = rescale * (v_cfg * ratio) + (1 - rescale) * v_cfg
    return (a * x - v) / b


def cfg_denoiser(denoiser, scale, cond: dict | None = None, uncond: dict | None = None, *, rescale: float = 0.0,
                 interval: tuple[float, float] | None = None, sigma_data: float = 1.0, batch: bool = True):
    """Classifier-free guidance as a denoiser: D_u + scale (D_c - D_u).

    denoiser: D(x, sigma, **kw). cond / uncond: keyword-argument dicts for the conditional and the
    unconditional pass. Negative conditioning is `uncond` = the negative prompt's conditioning (the
    guided prediction then moves away from it). scale: float or (B,) tensor; 1 returns the conditional
    denoiser exactly (no unconditional pass), 0 the unconditional one.
    rescale: guidance rescale weight phi in [0, 1] (0: plain CFG; Lin et al. suggest 0.7);
    sigma_data: data std for the v-space of the rescale.
    interval: (sigma_lo, sigma_hi): guidance only where sigma_lo < sigma <= sigma_hi, the conditional
    denoiser elsewhere (Kynkaanniemi et al. 2024). With a CPU sigma the unconditional pass is skipped
    when no sample is inside; on an accelerator both passes run and are blended with `torch.where`, so
    the wrapper never syncs.
    batch: run cond and uncond as one doubled batch when their tensors line up (one call instead of
    two); falls back to two calls otherwise.
    Extra keywords given at call time go to both passes."""
    cond, uncond = dict(cond or {}), dict(uncond or {})
    if rescale < 0 or rescale > 1:
        raise ValueError(f"rescale must be in [0, 1], got {rescale}")
    if interval is not None and not interval[0] < interval[1]:
        raise ValueError(f"interval must be (sigma_lo, sigma_hi) with sigma_lo < sigma_hi, got {interval}")
    plain_scale = not torch.is_tensor(scale)
    if plain_scale and scale == 1.0:
        return lambda x, sigma, **kw: denoiser(x, sigma, **cond, **kw)

    def guided(x, sigma, **kw):
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
        inside = None
        if interval is not None:
            inside = (sigma > interval[0]) & (sigma <= interval[1])
            if sigma.device.type == "cpu" and not bool(inside.any()):      # free on the CPU
                return denoiser(x, sigma, **cond, **kw)
        c, u = {**cond, **kw}, {**uncond, **kw}
        if batch and _batchable(c, u, x.shape[0]):
            both = denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), **_cat_cond(c, u))
            d_cond, d_uncond = both.chunk(2)
        else:
            d_cond, d_uncond = denoiser(x, sigma, **c), denoiser(x, sigma, **u)
        w = _per_sample(scale, x)
        out = d_uncond + w * (d_cond - d_uncond)
        if rescale > 0:
            out = _rescale(out, d_cond, x, sigma, rescale, sigma_data)
        if inside is not None:
            out = torch.where(_per_sample(inside, x).bool(), out, d_cond)
        return out

    return guided


# ---------------------------------------------------------------------- masks

def segment_mask(shape, dim: int, known, dtype=torch.bool, device="cpu") -> torch.Tensor:
    """A mask of `shape` that is True on the known index ranges along `dim` (e.g. time), False elsewhere.

    known: list of (start, stop) ranges. Continuation: [(0, n_prompt)]; in-betweening:
    [(0, n_head), (T - n_tail, T)]."""
    mask = torch.zeros(shape, dtype=torch.bool, device=device)
    for start, stop in known:
        idx = [slice(None)] * len(shape)
        idx[dim] = slice(start, stop)
        mask[tuple(idx)] = True
    return mask.to(dtype)


def _check_mask(known_x0, mask):
    if not torch.is_tensor(mask):
        raise TypeError("mask must be a tensor (True / 1 where the data is known)")
    mask = mask.bool() if mask.dtype == torch.bool else mask > 0.5
    try:
        torch.broadcast_shapes(mask.shape, known_x0.shape)
    except RuntimeError as err:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast against the known data "
                         f"{tuple(known_x0.shape)}") from err
    return mask.to(known_x0.device)


def masked_denoiser(denoiser, known_x0: torch.Tensor, mask: torch.Tensor, *, generator=None, noise=None,
                    renoise: str = "fixed"):
    """Denoiser for sampling with part of the data known (inpainting, continuation, in-betweening).

    known_x0: (B, ...) clean data (anything in the unknown region is ignored); mask: True (or > 0.5)
    where known, broadcastable to known_x0. At each call the input's known region is replaced by
    known_x0 + sigma * eps, and the output's known region is known_x0 itself, so any sampler's state
    converges to the known data there.
    renoise: "fixed" draws eps once (from `generator`, a generator or a list of B; or `noise` given),
    which keeps a deterministic sampler deterministic and the noise consistent across steps;
    "fresh" draws new eps at every call (the original replacement method).
    With guidance, put the mask outside: masked_denoiser(cfg_denoiser(D, ...), known_x0, mask), since
    cfg_denoiser doubles the batch inside its call."""
    mask = _check_mask(known_x0, mask)
    if renoise not in ("fixed", "fresh"):
        raise ValueError(f"renoise must be 'fixed' or 'fresh', got {renoise!r}")
    if renoise == "fixed" and noise is None:
        noise = randn(known_x0.shape, generator, device=known_x0.device, dtype=known_x0.dtype)

    def masked(x, sigma, **kw):
        eps = noise if renoise == "fixed" else randn(x.shape, generator, device=x.device, dtype=x.dtype)
        s = _per_sample(sigma, x)
        # at sigma = inf (a pure-noise start) x holds the unit noise itself, so the known part is eps
        noised = torch.where(torch.isfinite(s), known_x0 + s * eps, eps)
        x_in = torch.where(mask, noised, x)
        return torch.where(mask, known_x0, denoiser(x_in, sigma, **kw))

    return masked


def masked_sample(denoiser, x, sigmas, known_x0, mask, method: str = "dpmpp_2m", *, generator=None,
                  resample: int = 1, jump: int = 1, renoise: str = "fixed", **opts):
    """Sample with the known region fixed; returns x0 whose known region equals known_x0 exactly.

    x: (B, ...) start at sigmas[0]; method / opts as for `polydiff.core.samplers.sample`.
    resample: RePaint's U, how many times each slice of `jump` steps is run (1: no resampling; the
    number of denoiser calls grows by about that factor). Between repeats x goes back up from the
    slice's last sigma to its first by the exact forward transition with fresh noise from `generator`.
    """
    from .samplers import sample  # lazy: samplers may import guidance

    mask = _check_mask(known_x0, mask)
    if resample < 1 or jump < 1:
        raise ValueError(f"resample and jump must be >= 1, got resample={resample}, jump={jump}")
    wrapped = masked_denoiser(denoiser, known_x0, mask, generator=generator, renoise=renoise)
    if resample == 1:
        x = sample(wrapped, x, sigmas, method=method, generator=generator, **opts)
    else:
        sig = torch.as_tensor(sigmas)
        n = sig.numel() - 1
        opts.setdefault("progress", False)                   # one bar per slice would be noise
        for i in range(0, n, jump):
            part = sig[i:min(i + jump, n) + 1]
            hi, lo = float(part[0]), float(part[-1])
            repeats = resample if math.isfinite(hi) else 1   # nothing to go back up to from sigma = inf
            for r in range(repeats):
                if r > 0:
                    x = x + math.sqrt(hi**2 - lo**2) * randn(x.shape, generator, device=x.device, dtype=x.dtype)
                x = sample(wrapped, x, part, method=method, generator=generator, **opts)
    return torch.where(mask, known_x0, x)
