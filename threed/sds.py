"""Score distillation: pull rendered images towards an image diffusion prior (DreamFusion's SDS, VSD).

The prior (`ImagePrior`) is a discrete-time VP model: x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps, with an
eps-predictor `predict_eps(x_t, t, text_emb)`. A k-diffusion/EDM denoiser D(x, sigma, **cond) from
polydiff.core fits through `DenoiserPrior` (sigma_t = sqrt((1 - abar_t) / abar_t)); a diffusers
Stable Diffusion folder fits by encoding images with its VAE in `encode_images`.

SDS gradient on the image (or latent) x, for a t and a noise eps drawn per image:

    grad = w(t) * (eps_hat(x_t, t, y) - eps)

It is applied through a surrogate loss, `0.5 * ||x - stopgrad(x - grad)||^2`, whose derivative with
respect to x is exactly `grad` (the prior's Jacobian is never back-propagated, as in DreamFusion).

Classifier-free guidance, two equivalent spellings (`cfg_form`):
- "uncond": eps_hat = eps_u + s * (eps_c - eps_u)     (diffusers / threestudio; s = 1 is conditional)
- "cond":   eps_hat = eps_c + w * (eps_c - eps_u)     (DreamFusion's paper; w = 0 is conditional)
so s = 1 + w. For Gaussian data with class means mu_c, mu_u and a shared variance, SDS's fixed point is
mu_u + s (mu_c - mu_u) == mu_c + w (mu_c - mu_u): guidance extrapolates past the conditional mean,
which is why large guidance saturates colours (tests/test_threed_sds.py checks both).

Negative prompts: pass the negative prompt's embedding as `uncond_emb` (the Stable Diffusion habit),
or use Perp-Neg (Armandpour et al. 2023), which removes from each negative direction its component
along the positive one, so a negative such as "back view" cannot cancel the prompt itself.

Weighting w(t): "sds" = 1 - abar_t (DreamFusion), "uniform" = 1, "fantasia3d" = sqrt(abar_t) (1 - abar_t).
Timestep annealing: t ~ U[t_min, t_max(step)] where t_max falls from `t_range[1]` to `t_max_end`
linearly ("linear") or as sqrt of progress ("sqrt"); "none" keeps it fixed. Large t early shapes the
coarse geometry, small t late refines detail.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import torch

WEIGHTINGS = ("sds", "uniform", "fantasia3d")
CFG_FORMS = ("uncond", "cond")
ANNEALS = ("none", "linear", "sqrt")


@runtime_checkable
class ImagePrior(Protocol):
    """What score distillation needs from an image diffusion model.

    alphas_cumprod: (T,) abar_t of the training schedule, t = 0..T-1 (t = 0 least noisy).
    encode_text(prompts) -> an embedding batch (a tensor or a dict of tensors) predict_eps accepts.
    encode_images(images) -> x: images (B, 3, H, W) in [0, 1] to the space the prior diffuses
      (pixels scaled to [-1, 1] for a pixel prior, VAE latents for Stable Diffusion); differentiable.
    predict_eps(x_t, t, text_emb) -> eps_hat with x_t's shape; t: (B,) long.
    """

    alphas_cumprod: torch.Tensor

    def encode_text(self, prompts: list[str]) -> Any: ...

    def encode_images(self, images: torch.Tensor) -> torch.Tensor: ...

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, text_emb: Any) -> torch.Tensor: ...


def check_prompts(prompts) -> list[str]:
    """A non-empty list of non-blank prompts, or a ValueError saying what to pass."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
        raise ValueError(f"prompts must be non-empty text, e.g. 'a red cube'; got {prompts!r}")
    return list(prompts)


class DenoiserPrior:
    """An `ImagePrior` over a polydiff.core denoiser D(x, sigma, **cond) -> x0_hat (x = x0 + sigma eps).

    text_encoder(prompts) must return the `cond` dict the denoiser takes. The VP latent x_t is the
    sigma-space x scaled by sqrt(abar_t), so D sees x_t / sqrt(abar_t) at sigma_t = sqrt((1 - abar_t) / abar_t)
    and eps = (x - D(x, sigma)) / sigma. Images are diffused as pixels in [-1, 1].
    """

    def __init__(self, denoiser, text_encoder, alphas_cumprod: torch.Tensor):
        self.denoiser, self.text_encoder = denoiser, text_encoder
        self.alphas_cumprod = alphas_cumprod

    def encode_text(self, prompts):
        return self.text_encoder(check_prompts(prompts))

    def encode_images(self, images):
        return images * 2.0 - 1.0

    def predict_eps(self, x_t, t, text_emb):
        abar = self.alphas_cumprod.to(x_t.device)[t].to(x_t.dtype)
        shape = (-1,) + (1,) * (x_t.dim() - 1)
        sigma = torch.sqrt((1.0 - abar) / abar)
        x = x_t / torch.sqrt(abar).reshape(shape)
        x0 = self.denoiser(x, sigma, **text_emb)
        return (x - x0) / sigma.reshape(shape)


# -- the pieces ----------------------------------------------------------------------------------
def sds_weight(abar: torch.Tensor, weighting: str = "sds") -> torch.Tensor:
    if weighting == "sds":
        return 1.0 - abar
    if weighting == "uniform":
        return torch.ones_like(abar)
    if weighting == "fantasia3d":
        return abar.sqrt() * (1.0 - abar)
    raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")


def guided_eps(eps_u: torch.Tensor, eps_c: torch.Tensor, scale: float, form: str = "uncond") -> torch.Tensor:
    """Classifier-free guidance in one of the two spellings above."""
    if form == "uncond":
        return eps_u + scale * (eps_c - eps_u)
    if form == "cond":
        return eps_c + scale * (eps_c - eps_u)
    raise ValueError(f"cfg_form must be one of {CFG_FORMS}, got {form!r}")


def perp_neg_eps(eps_u, eps_c, eps_negs, neg_weights, scale: float) -> torch.Tensor:
    """Perp-Neg guidance: eps_u + s * (d_c - sum_i w_i perp(d_i, d_c)), d = eps - eps_u, where
    perp(a, b) = a - <a, b> / |b|^2 b is a's part orthogonal to b (per image)."""
    d_c = eps_c - eps_u
    flat_c = d_c.flatten(1)
    total = d_c
    for eps_n, w in zip(eps_negs, neg_weights):
        d_n = (eps_n - eps_u).flatten(1)
        coef = (d_n * flat_c).sum(1, keepdim=True) / flat_c.pow(2).sum(1, keepdim=True).clamp(min=1e-12)
        perp = (d_n - coef * flat_c).reshape(d_c.shape)
        total = total - w * perp
    return eps_u + scale * total


def sample_timesteps(batch: int, num_train_timesteps: int, t_range=(0.02, 0.98), step: int = 0,
                     total_steps: int = 1, anneal: str = "none", t_max_end: float = 0.5,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """(B,) integer timesteps, uniform in [t_min, t_max(step)] * T (see the module docstring)."""
    if anneal not in ANNEALS:
        raise ValueError(f"anneal must be one of {ANNEALS}, got {anneal!r}")
    t_min, t_max = t_range
    if not 0.0 <= t_min <= t_max <= 1.0:
        raise ValueError(f"t_range must satisfy 0 <= t_min <= t_max <= 1, got {t_range}")
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    if anneal == "linear":
        t_max = t_max + (max(t_max_end, t_min) - t_max) * progress
    elif anneal == "sqrt":
        t_max = t_max + (max(t_max_end, t_min) - t_max) * math.sqrt(progress)
    lo = round(t_min * (num_train_timesteps - 1))
    hi = round(t_max * (num_train_timesteps - 1))
    return torch.randint(lo, hi + 1, (batch,), generator=generator)


def sds_gradient(prior: ImagePrior, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, cond_emb,
                 uncond_emb=None, cfg_scale: float = 1.0, cfg_form: str = "uncond", weighting: str = "sds",
                 neg_embs=(), neg_weights=()) -> torch.Tensor:
    """w(t) (eps_hat(x_t) - noise) for x (B, ...), t (B,), noise like x. No graph is kept.

    uncond_emb None means no guidance (eps_hat = eps_c). neg_embs (with neg_weights) switches to Perp-Neg.
    """
    abar = prior.alphas_cumprod.to(x.device)[t].to(x.dtype)
    shape = (-1,) + (1,) * (x.dim() - 1)
    with torch.no_grad():
        x = x.detach()
        x_t = abar.sqrt().reshape(shape) * x + (1.0 - abar).sqrt().reshape(shape) * noise
        eps_c = prior.predict_eps(x_t, t, cond_emb)
        if uncond_emb is None:
            eps_hat = eps_c
        else:
            eps_u = prior.predict_eps(x_t, t, uncond_emb)
            if len(neg_embs):
                if cfg_form != "uncond":
                    raise ValueError("Perp-Neg is written in the 'uncond' CFG form; use cfg_form='uncond'")
                eps_n = [prior.predict_eps(x_t, t, e) for e in neg_embs]
                eps_hat = perp_neg_eps(eps_u, eps_c, eps_n, neg_weights, cfg_scale)
            else:
                eps_hat = guided_eps(eps_u, eps_c, cfg_scale, cfg_form)
        grad = sds_weight(abar, weighting).reshape(shape) * (eps_hat - noise)
    return torch.nan_to_num(grad)


def sds_surrogate_loss(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """0.5 * ||x - stopgrad(x - grad)||^2 summed: d loss / d x == grad, and loss == 0.5 ||grad||^2."""
    target = (x - grad).detach()
    return 0.5 * (x - target).pow(2).sum()


def score_distillation(prior: ImagePrior, images: torch.Tensor, cond_emb, uncond_emb=None, *,
                       cfg_scale: float = 7.5, cfg_form: str = "uncond", weighting: str = "sds",
                       t_range=(0.02, 0.98), step: int = 0, total_steps: int = 1, anneal: str = "none",
                       t_max_end: float = 0.5, neg_embs=(), neg_weights=(),
                       generator: torch.Generator | None = None):
    """One SDS step on rendered images (B, 3, H, W) in [0, 1] (differentiable w.r.t. the scene).

    Returns (loss, info): loss.backward() puts the SDS gradient into the scene's parameters;
    info holds the timesteps and the gradient norm.
    """
    x = prior.encode_images(images)
    t = sample_timesteps(x.shape[0], len(prior.alphas_cumprod), t_range, step, total_steps, anneal,
                         t_max_end, generator).to(x.device)
    noise = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
    grad = sds_gradient(prior, x, t, noise, cond_emb, uncond_emb, cfg_scale, cfg_form, weighting,
                        neg_embs, neg_weights)
    loss = sds_surrogate_loss(x, grad)
    return loss, {"t": t, "grad_norm": grad.flatten(1).norm(dim=1)}


# -- variational score distillation (ProlificDreamer), optional ------------------------------------
def vsd_gradient(prior: ImagePrior, phi_eps, x, t, noise, cond_emb, uncond_emb=None, cfg_scale: float = 1.0,
                 cfg_form: str = "uncond", weighting: str = "sds") -> torch.Tensor:
    """w(t) (eps_hat_prior(x_t) - eps_phi(x_t, t, y)): SDS with the injected noise replaced by the score of
    the rendered-image distribution, which `phi_eps(x_t, t, cond_emb)` learns (a LoRA / small network
    trained with `vsd_phi_loss` on the renders). If phi already matches the prior, the gradient is zero."""
    abar = prior.alphas_cumprod.to(x.device)[t].to(x.dtype)
    shape = (-1,) + (1,) * (x.dim() - 1)
    with torch.no_grad():
        x_t = abar.sqrt().reshape(shape) * x.detach() + (1.0 - abar).sqrt().reshape(shape) * noise
        eps_c = prior.predict_eps(x_t, t, cond_emb)
        eps_hat = eps_c if uncond_emb is None else guided_eps(prior.predict_eps(x_t, t, uncond_emb), eps_c,
                                                              cfg_scale, cfg_form)
        grad = sds_weight(abar, weighting).reshape(shape) * (eps_hat - phi_eps(x_t, t, cond_emb))
    return torch.nan_to_num(grad)


def vsd_phi_loss(phi_eps, alphas_cumprod, x, t, noise, cond_emb) -> torch.Tensor:
    """The eps-prediction loss that fits phi to the current renders x (detached)."""
    abar = alphas_cumprod.to(x.device)[t].to(x.dtype)
    shape = (-1,) + (1,) * (x.dim() - 1)
    x_t = abar.sqrt().reshape(shape) * x.detach() + (1.0 - abar).sqrt().reshape(shape) * noise
    return (phi_eps(x_t, t, cond_emb) - noise).pow(2).mean()
