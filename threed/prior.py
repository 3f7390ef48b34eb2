"""The built-in image prior: a small text-conditioned image diffusion model, and loading any prior.

    prior = load_prior()                     # the shipped model (threed/checkpoints/prior)
    prior = load_prior("runs/threed/prior/checkpoints/step-000004000")   # one of our checkpoints
    prior = load_prior("/models/sd-turbo")   # a diffusers Stable Diffusion folder (threed.sd_prior)

`ImageDenoiser` is the core 2D U-Net (polydiff.core.unet.UNet2D) under EDM preconditioning (Karras et
al. 2022): D(x, sigma, tokens, token_mask, pooled) -> x0_hat on RGB images scaled to [-1, 1]
(sigma_data 0.5). Text comes from the frozen MiniLM sentence encoder (polydiff.core.text): its token
embeddings are cross-attended at the coarse levels, its pooled vector joins the noise embedding.
Classifier-free guidance is trained by replacing the text with the learned null condition
(polydiff.core.conditioning.condition_dropout); no text (`tokens=None`, or the prompt "") means null.

For score distillation the model is seen as a discrete VP prior (`sds.DenoiserPrior`): the
Stable Diffusion scaled-linear beta schedule fixes abar_t for t = 0..999, so t-ranges and
guidance scales read as they do with Stable Diffusion (sigma_t from 0.03 to 14.6). The training
noise levels are EDM's log-normal shifted up (P_mean -0.6, P_std 1.4: 95 % in [0.035, 9]) because
SDS spends its early, shape-forming steps at large sigma.
"""

from __future__ import annotations

from pathlib import Path

import torch
from polydiff.core.checkpoint import CheckpointError, ModelMixin, load_pretrained
from polydiff.core.conditioning import Condition, NullCondition
from polydiff.core.precond import EDMPrecond
from polydiff.core.schedules import DiscreteSchedule
from polydiff.core.unet import UNet2D

from .sds import DenoiserPrior

TEXT_DIM = 384  # MiniLM's width (core.text default encoder)
DEFAULT_PRIOR = Path(__file__).resolve().parent / "checkpoints" / "prior"


class ImageDenoiser(ModelMixin, EDMPrecond):
    """D(x, sigma, tokens=, token_mask=, pooled=) -> x0_hat for images x (B, 3, R, R) in [-1, 1].

    `text_encoder`: None for the bundled MiniLM or a local Hugging Face folder (width `text_dim`).
    """

    def __init__(self, resolution: int = 32, channels: int = 32, channel_mult=(1, 2, 2), num_res_blocks: int = 1,
                 attn_levels=(2,), heads: int = 4, groups: int = 8, text_dim: int = TEXT_DIM,
                 sigma_data: float = 0.5, P_mean: float = -0.6, P_std: float = 1.4,
                 text_encoder: str | None = None, max_text_tokens: int = 32,
                 schedule: str = "scaled_linear", num_train_timesteps: int = 1000):
        net = UNet2D(3, channels=channels, channel_mult=tuple(channel_mult), num_res_blocks=num_res_blocks,
                     attn_levels=tuple(attn_levels), heads=heads, groups=groups, cond_dim=text_dim,
                     pooled_dim=text_dim)
        EDMPrecond.__init__(self, net, sigma_data=sigma_data, P_mean=P_mean, P_std=P_std)
        self.resolution, self.text_encoder, self.max_text_tokens = resolution, text_encoder, max_text_tokens
        self.schedule, self.num_train_timesteps = schedule, num_train_timesteps
        self.null = NullCondition(text_dim, text_dim, length=1)

    def forward(self, x, sigma, *, net_output: bool = False, tokens=None, token_mask=None, pooled=None):
        """x: (B, 3, H, W); sigma: (B,); tokens (B, L, D), token_mask (B, L), pooled (B, D) as plain tensors
        (so guidance can batch the conditional and unconditional passes); None = the null condition."""
        cond = self.null(x.shape[0]) if tokens is None else Condition(tokens, token_mask, pooled)
        return EDMPrecond.forward(self, x, sigma, net_output=net_output, cond=cond.to(x.dtype))

    def condition_kwargs(self, cond: Condition, length: int | None = None) -> dict:
        """Denoiser keyword arguments for a `Condition`, tokens padded to `length`."""
        cond = cond.pad_to(max(length or 0, cond.tokens.shape[1]))
        return {"tokens": cond.tokens, "token_mask": cond.mask, "pooled": cond.pooled}

    def null_kwargs(self, batch: int, length: int = 1) -> dict:
        return self.condition_kwargs(self.null(batch), length)

    def alphas_cumprod(self) -> torch.Tensor:
        """(T,) abar_t of the discrete schedule SDS reads this model through."""
        return DiscreteSchedule.named(self.schedule, self.num_train_timesteps).alphas_cumprod.float()


class BuiltinPrior(DenoiserPrior):
    """An `ImagePrior` over an `ImageDenoiser`. encode_text("") (or an all-blank batch entry) is the
    learned null condition: the unconditional branch of classifier-free guidance, as "" is for Stable
    Diffusion. `resolution` is the image size the model was trained at (renders are made at it)."""

    def __init__(self, model: ImageDenoiser, encoder=None):
        from polydiff.core.text import TextEncoder

        self.model = model
        self.encoder = encoder or TextEncoder(model.text_encoder, max_length=model.max_text_tokens)
        self.resolution = model.resolution
        super().__init__(model, self._text, model.alphas_cumprod())

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _text(self, prompts: list[str]) -> dict:
        blank = [not p.strip() for p in prompts]
        if all(blank):
            return self.model.null_kwargs(len(prompts))
        cond = self.encoder([p if p.strip() else "." for p in prompts]).to(self.device)
        if any(blank):  # a mixed batch: the blank entries get the null condition
            null = self.model.null(len(prompts)).pad_to(cond.tokens.shape[1])
            pick = torch.tensor(blank, device=self.device)
            cond = Condition(torch.where(pick[:, None, None], null.tokens, cond.tokens),
                             torch.where(pick[:, None], null.mask, cond.mask),
                             torch.where(pick[:, None], null.pooled, cond.pooled))
        return self.model.condition_kwargs(cond)

    def encode_text(self, prompts):
        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"prompts must be a list of strings, got {prompts!r}")
        with torch.no_grad():
            return self._text(list(prompts))

    @torch.no_grad()
    def predict_eps(self, x_t, t, text_emb):
        return super().predict_eps(x_t, t, text_emb)


@torch.no_grad()
def sample_images(prior: BuiltinPrior, prompts: list[str], steps: int = 20, cfg_scale: float = 3.0,
                  seed: int = 0) -> torch.Tensor:
    """Images (B, 3, R, R) in [0, 1] drawn from the prior for `prompts` (DPM++ 2M, Karras sigmas, CFG):
    a direct look at what the prior has learned, independent of score distillation."""
    from polydiff.core.guidance import cfg_denoiser
    from polydiff.core.runtime import generators, randn
    from polydiff.core.samplers import sample
    from polydiff.core.schedules import karras_sigmas

    model, r = prior.model, prior.resolution
    cond = prior.encode_text(prompts)
    uncond = model.null_kwargs(len(prompts), cond["tokens"].shape[1])
    den = cfg_denoiser(model, cfg_scale, cond, uncond, sigma_data=model.sigma_data)
    sigmas = karras_sigmas(steps, 0.01, 14.6).to(prior.device)
    gens = generators(seed, len(prompts), prior.device)
    x = randn((len(prompts), 3, r, r), gens, device=prior.device) * sigmas[0]
    x = sample(den, x, sigmas.float(), method="dpmpp_2m", generator=gens)
    return ((x + 1) / 2).clamp(0, 1)


def load_prior(path=None, device="cpu", use_ema: bool | None = None):
    """An `ImagePrior` from `path`: None = the shipped prior; a folder with our config.json (a package
    checkpoint or a training checkpoint, whose EMA weights are used); or a diffusers Stable Diffusion
    folder (model_index.json), handled by `polydiff.threed.sd_prior`."""
    device = torch.device(device)
    folder = Path(path).expanduser() if path is not None else DEFAULT_PRIOR
    if path is None and not (folder / "config.json").is_file():
        raise CheckpointError(f"no shipped image prior at {folder}; train one with `polydiff threed train-prior "
                              "--config threed/configs/prior_small.yaml` and pass its folder with --prior")
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: prior folder not found; pass a folder with config.json (ours) or "
                              "model_index.json (a diffusers Stable Diffusion pipeline)")
    if (folder / "model_index.json").is_file():
        from . import sd_prior

        if sd_prior.is_diffusers_folder(folder):
            return sd_prior.StableDiffusionPrior.from_folder(folder, device)
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder}: neither config.json (a polydiff image prior) nor model_index.json "
                              "(a diffusers pipeline); point --prior at one of those")
    if use_ema is None:  # a training checkpoint holds ema.safetensors beside the raw weights
        use_ema = (folder / "ema.safetensors").is_file()
    model = load_pretrained(folder, cls=ImageDenoiser, device=device, use_ema=use_ema)
    return BuiltinPrior(model.float().eval().requires_grad_(False))
