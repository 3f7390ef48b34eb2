"""A Stable Diffusion-style image prior from a local diffusers folder, for latent score distillation.

    prior = StableDiffusionPrior.from_folder("/models/stable-diffusion-v1-5", "cuda")
    prior = load_prior("/models/sd-turbo")          # the same, through threed.prior

The folder is a diffusers pipeline as `save_pretrained` writes it:

    model_index.json          {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", ...], ...}
    unet/                     config.json + diffusion_pytorch_model.safetensors (UNet2DConditionModel)
    vae/                      config.json + diffusion_pytorch_model.safetensors (AutoencoderKL)
    text_encoder/             config.json + model.safetensors (CLIPTextModel)
    tokenizer/                the tokenizer's files (CLIPTokenizer)
    scheduler/                scheduler_config.json (only its beta schedule and prediction type are read)

Everything is read from local files (`local_files_only`); nothing is downloaded.

Latent SDS (as Stable DreamFusion / threestudio): renders in [0, 1] are resized to the VAE's input size
(`unet.sample_size * 2 ** (len(vae.block_out_channels) - 1)`, 512 for SD 1.x), mapped to [-1, 1],
encoded, and the posterior mean is scaled, `z = (mean - shift_factor) * scaling_factor` (0.18215 and
no shift for SD 1.x/2.x), so the latents have roughly unit variance, the space the UNet was trained in.
Score distillation then works on z: the UNet is only ever run without a graph, and the gradient reaches
the render through the VAE encoder alone (its weights frozen), which keeps the step's memory to one
encoder pass with activations.

The UNet's output is turned into an eps prediction whatever the scheduler's `prediction_type`, with
x_t = sqrt(abar) x0 + sqrt(1 - abar) eps:
- "epsilon":      eps
- "v_prediction": v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022), so
                  eps = sqrt(abar) v + sqrt(1 - abar) x_t
- "sample":       x0, so eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar)

Text: the folder's own tokenizer pads every prompt to its `model_max_length` (77 for CLIP) and the
text encoder's last hidden state is the UNet's `encoder_hidden_states`; "" is the unconditional
branch of classifier-free guidance, as in Stable Diffusion's pipelines, and a negative prompt takes its
place. Pipelines whose UNet wants more than token states (SDXL's pooled text and size ids) are refused.

The render resolution is not the prior's business here (no `resolution` attribute): renders are
resized to the VAE's input, so a 64 px render is upsampled to 512 px as threestudio does on a budget.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from polydiff.core.checkpoint import CheckpointError
from polydiff.core.schedules import BETAS, DiscreteSchedule, rescale_zero_terminal_snr

# component folder -> the file(s) that must be in it (any one of each tuple)
MODEL_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                 "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.safetensors.index.json")
TEXT_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.fp16.safetensors", "model.safetensors.index.json")
REQUIRED = {
    "unet": (("config.json",), MODEL_WEIGHTS),
    "vae": (("config.json",), MODEL_WEIGHTS),
    "text_encoder": (("config.json",), TEXT_WEIGHTS),
    "tokenizer": (("tokenizer_config.json", "vocab.json", "tokenizer.json"),),
    "scheduler": (("scheduler_config.json",),),
}
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
# diffusers' beta_schedule names -> polydiff.core.schedules' (squaredcos_cap_v2 is Nichol & Dhariwal's cosine)
BETA_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "squaredcos_cap_v2": "cosine",
                  "sigmoid": "sigmoid"}


def is_diffusers_folder(path) -> bool:
    """True for a folder holding a diffusers `model_index.json` (complete or not: `from_folder` says
    what is missing); False for anything else, our own checkpoint folders included."""
    folder = Path(path).expanduser()
    return folder.is_dir() and (folder / "model_index.json").is_file()


def missing_parts(folder: Path) -> list[str]:
    """What a Stable Diffusion folder lacks, as 'unet/ (config.json)' style strings; [] when complete."""
    missing = [] if (folder / "model_index.json").is_file() else ["model_index.json"]
    for name, needs in REQUIRED.items():
        sub = folder / name
        if not sub.is_dir():
            missing.append(f"{name}/")
            continue
        for choices in needs:
            if not any((sub / f).is_file() for f in choices):
                missing.append(f"{name}/{' or '.join(choices)}")
    return missing


def alphas_cumprod_from_config(cfg: dict) -> torch.Tensor:
    """(T,) float32 abar_t from a diffusers scheduler config (trained_betas, or beta_schedule with
    beta_start / beta_end, optionally rescaled to zero terminal SNR)."""
    steps = int(cfg.get("num_train_timesteps", 1000))
    if cfg.get("trained_betas") is not None:
        betas = torch.as_tensor(cfg["trained_betas"], dtype=torch.float64)
    else:
        name = cfg.get("beta_schedule", "linear")
        if name not in BETA_SCHEDULES:
            raise CheckpointError(f"scheduler beta_schedule {name!r} is not supported; use one of "
                                  f"{sorted(BETA_SCHEDULES)}")
        ours = BETA_SCHEDULES[name]
        kw = {} if ours == "cosine" else {"beta_start": float(cfg.get("beta_start", 1e-4)),
                                          "beta_end": float(cfg.get("beta_end", 0.02))}
        betas = BETAS[ours](steps, **kw)
    if cfg.get("rescale_betas_zero_snr", False):
        betas = rescale_zero_terminal_snr(betas)
    return DiscreteSchedule.from_betas(betas).alphas_cumprod.float()


def eps_from_prediction(out: torch.Tensor, x_t: torch.Tensor, abar: torch.Tensor, prediction_type: str):
    """The UNet's output as an eps prediction (see the module docstring). abar: (B,) at each x_t."""
    shape = (-1,) + (1,) * (x_t.dim() - 1)
    a, s = abar.sqrt().reshape(shape), (1.0 - abar).sqrt().reshape(shape)
    if prediction_type == "epsilon":
        return out
    if prediction_type == "v_prediction":
        return a * out + s * x_t
    if prediction_type == "sample":
        return (x_t - a * out) / s.clamp(min=1e-8)
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


class StableDiffusionPrior:
    """An `ImagePrior` (threed.sds) over a UNet2DConditionModel, an AutoencoderKL and a CLIP text encoder."""

    def __init__(self, unet, vae, text_encoder, tokenizer, alphas_cumprod: torch.Tensor,
                 prediction_type: str = "epsilon", vae_checkpointing: bool = True):
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        if getattr(unet.config, "addition_embed_type", None) is not None:
            raise CheckpointError("this UNet needs extra conditioning (addition_embed_type="
                                  f"{unet.config.addition_embed_type!r}, e.g. SDXL's pooled text and size ids); "
                                  "only Stable Diffusion 1.x/2.x-style pipelines are supported")
        # frozen: SDS never trains the prior, and the render's gradient passes through the VAE's input only
        self.unet = unet.eval().requires_grad_(False)
        self.vae = vae.eval().requires_grad_(False)
        self.text_encoder = text_encoder.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        # keep only block-boundary activations of the encoder for the backward pass and recompute the rest
        # (one more encoder forward): at 512 px a batch of 4 renders would otherwise hold gigabytes
        self.vae_checkpointing = bool(vae_checkpointing and getattr(vae, "_supports_gradient_checkpointing", False))
        if self.vae_checkpointing:
            vae.enable_gradient_checkpointing()
        self.alphas_cumprod = alphas_cumprod.float()
        self.prediction_type = prediction_type
        vae_cfg = vae.config
        self.latent_scale = float(getattr(vae_cfg, "scaling_factor", 0.18215))
        self.latent_shift = float(getattr(vae_cfg, "shift_factor", None) or 0.0)
        self.vae_scale_factor = 2 ** (len(vae_cfg.block_out_channels) - 1)
        # (H, W) the VAE sees: the UNet's latent size times the VAE's downsampling
        size = unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        self.image_size = tuple(int(s) * self.vae_scale_factor for s in size)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    # -- loading ------------------------------------------------------------------------------
    @classmethod
    def from_folder(cls, path, device="cpu", dtype: torch.dtype | None = None,
                    vae_checkpointing: bool = True) -> StableDiffusionPrior:
        """Load from a local diffusers folder. dtype None: float16 on CUDA, float32 elsewhere (the VAE
        stays float32 when its config asks for `force_upcast`, as diffusers' pipelines do).
        vae_checkpointing: recompute the VAE encoder's activations in the backward pass (less memory)."""
        import diffusers
        import transformers

        folder = Path(path).expanduser()
        device = torch.device(device)
        if not folder.is_dir():
            raise CheckpointError(f"{folder}: not a folder; pass a diffusers Stable Diffusion folder "
                                  "(model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)")
        missing = missing_parts(folder)
        if missing:
            raise CheckpointError(f"{folder} is not a complete diffusers Stable Diffusion folder: missing "
                                  f"{', '.join(missing)}. Save the whole pipeline there with "
                                  "StableDiffusionPipeline.save_pretrained(folder), or copy the missing parts")
        try:
            index = json.loads((folder / "model_index.json").read_text())
            sched_cfg = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{folder}: cannot read model_index.json / scheduler_config.json ({e})") from e
        prediction_type = sched_cfg.get("prediction_type", "epsilon")
        if prediction_type not in PREDICTION_TYPES:
            raise CheckpointError(f"{folder}/scheduler/scheduler_config.json: prediction_type {prediction_type!r} "
                                  f"is not one of {PREDICTION_TYPES}")
        if dtype is None:
            dtype = torch.float16 if device.type == "cuda" else torch.float32

        def component(name: str, library, default: str):
            # the class named in model_index.json, from the library it names (diffusers or transformers)
            entry = index.get(name) or [None, default]
            cls_name = entry[1] if isinstance(entry, list) and len(entry) == 2 and entry[1] else default
            klass = getattr(library, cls_name, None)
            if not (isinstance(klass, type) and hasattr(klass, "from_pretrained")):
                raise CheckpointError(f"{folder}/model_index.json: {name} class {cls_name!r} is not in "
                                      f"{library.__name__}; expected e.g. {default}")
            return klass

        load = {"local_files_only": True}
        try:
            unet = component("unet", diffusers, "UNet2DConditionModel").from_pretrained(
                folder / "unet", torch_dtype=dtype, **load)
            vae_cls = component("vae", diffusers, "AutoencoderKL")
            vae_cfg = vae_cls.load_config(folder / "vae", **load)
            vae_dtype = torch.float32 if dtype != torch.float32 and vae_cfg.get("force_upcast", True) else dtype
            vae = vae_cls.from_pretrained(folder / "vae", torch_dtype=vae_dtype, **load)
            text_encoder = component("text_encoder", transformers, "CLIPTextModel").from_pretrained(
                folder / "text_encoder", dtype=dtype, **load)
            tokenizer = component("tokenizer", transformers, "CLIPTokenizer").from_pretrained(
                folder / "tokenizer", **load)
        except CheckpointError:
            raise
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"{folder}: could not load the pipeline's components ({e})") from e
        return cls(unet.to(device), vae.to(device), text_encoder.to(device), tokenizer,
                   alphas_cumprod_from_config(sched_cfg), prediction_type,
                   vae_checkpointing=vae_checkpointing)

    # -- the ImagePrior protocol -----------------------------------------------------------------
    @torch.no_grad()
    def encode_text(self, prompts) -> torch.Tensor:
        """prompts (a str or list of B str; "" allowed: the unconditional branch) -> (B, L, D) token states."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"prompts must be a non-empty list of strings, got {prompts!r}")
        # the tokenizer's length (77 for CLIP), never more than the encoder has position embeddings for
        length = min(int(self.tokenizer.model_max_length),
                     int(getattr(self.text_encoder.config, "max_position_embeddings", 77)))
        ids = self.tokenizer(list(prompts), padding="max_length", max_length=length, truncation=True,
                             return_tensors="pt").input_ids
        dev = self.text_encoder.device
        return self.text_encoder(ids.to(dev))[0]

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [0, 1] -> latents (B, C, h, w) in float32, differentiable w.r.t. images."""
        vae_dtype = next(self.vae.parameters()).dtype
        x = images.to(self.device)
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False)
        x = (2.0 * x - 1.0).to(vae_dtype)
        mean = self.vae.encode(x).latent_dist.mean
        return ((mean - self.latent_shift) * self.latent_scale).float()

    @torch.no_grad()
    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """x_t (B, C, h, w) latents, t (B,) long, text_emb (B, L, D) -> eps_hat (B, C, h, w) in x_t's dtype."""
        unet_dtype = next(self.unet.parameters()).dtype
        t = t.to(x_t.device)
        if text_emb.shape[0] != x_t.shape[0]:
            if text_emb.shape[0] != 1:
                raise ValueError(f"{text_emb.shape[0]} text embeddings for {x_t.shape[0]} latents")
            text_emb = text_emb.expand(x_t.shape[0], -1, -1)
        out = self.unet(x_t.to(unet_dtype), t, encoder_hidden_states=text_emb.to(x_t.device, unet_dtype)).sample
        abar = self.alphas_cumprod.to(x_t.device)[t].to(x_t.dtype)
        return eps_from_prediction(out.to(x_t.dtype), x_t, abar, self.prediction_type)

    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, C, h, w) -> images (B, 3, H, W) in [0, 1]: to look at what SDS is pulling towards."""
        vae_dtype = next(self.vae.parameters()).dtype
        x = self.vae.decode((z / self.latent_scale + self.latent_shift).to(vae_dtype)).sample
        return ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0)
