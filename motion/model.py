"""The text-to-motion denoiser: an MDM-style transformer over HumanML3D features, in the EDM convention.

    model = MotionDenoiser(dim=256, depth=4)                 # a ModelMixin: save_pretrained / from_pretrained
    model.set_normalization(mean, std)                       # the corpus's Mean.npy / Std.npy (263,)
    x0_hat = model(x, sigma, cond=text_condition, mask=valid)   # x: (B, 263, T) normalised features

After MDM (Tevet et al. 2023): a transformer over frames, text from a frozen sentence encoder, the
network predicting clean motion rather than noise, classifier-free guidance by condition dropout, and
variable length through a padding mask. The backbone is the core `DiT` (adaLN-Zero blocks with
cross-attention to the text tokens; the pooled sentence vector joins the noise embedding), and
`patch_size` frames make one token (2 by default: 0.1 s, which halves the attention cost on the CPU).

Parameterisation: EDM's input scaling and noise conditioning (c_in, c_noise = log(sigma) / 4, log-normal
training sigmas; Karras et al. 2022), with the network predicting x0 itself (prediction="x0": c_skip = 0,
c_out = 1), as MDM does. Why not EDM's full c_skip / c_out mix: with 4 frames a token the patch
embedding squeezes 4 x 263 numbers into `dim`, so the network cannot see, and therefore cannot cancel,
the per-frame noise that c_skip * x lets through at mid sigma; a model trained that way (kept as
prediction="edm") produced motion as jittery as noise (jerk ~4,900 m/s^3 against ~70 for ground truth).
With x0 prediction nothing of the noisy input reaches the output past the network. The denoiser still
returns the x0 estimate in the sigma convention of the core samplers, guidance and masks, and the
geometric losses act on that same estimate. sigma_data = 1: the features are normalised per channel by
the corpus Mean / Std.

Everything needed to rebuild the denoiser lives in the checkpoint: the constructor arguments (net
sizes, EDM constants, fps, text encoder) in config.json, Mean / Std as buffers in the weights.
"""

from __future__ import annotations

import torch
from polydiff.core.checkpoint import ModelMixin
from polydiff.core.conditioning import Condition, NullCondition
from polydiff.core.precond import EDMPrecond
from polydiff.core.transformer import DiT

from .features import FEATURE_DIM

TEXT_DIM = 384  # MiniLM's width (core.text default encoder)


class MotionDenoiser(ModelMixin, EDMPrecond):
    """D(x, sigma, cond=Condition, mask=(B, T) bool) -> x0_hat, all in normalised feature space (B, C, T).

    `cond=None` means the unconditional (null) condition. `text_encoder` is None for the bundled MiniLM
    or a local Hugging Face folder (its width must equal `text_dim`).
    """

    def __init__(self, n_feats: int = FEATURE_DIM, dim: int = 256, depth: int = 4, heads: int = 4,
                 mlp_ratio: float = 2.0, patch_size: int = 2, text_dim: int = TEXT_DIM,
                 sigma_data: float = 1.0, P_mean: float = -1.2, P_std: float = 1.2, fps: float = 20.0,
                 text_encoder: str | None = None, max_text_tokens: int = 40, prediction: str = "edm"):
        net = DiT(in_channels=n_feats, dim=dim, depth=depth, heads=heads, mlp_ratio=mlp_ratio,
                  patch_size=patch_size, positions="sinusoidal", cond_dim=text_dim, pooled_dim=text_dim)
        EDMPrecond.__init__(self, net, sigma_data=sigma_data, P_mean=P_mean, P_std=P_std)
        if prediction not in ("edm", "x0"):
            raise ValueError(f"prediction must be 'edm' or 'x0', got {prediction!r}")
        self.prediction = prediction
        self.n_feats, self.fps, self.text_encoder = n_feats, fps, text_encoder
        self.max_text_tokens = max_text_tokens
        self.null = NullCondition(text_dim, text_dim, length=1)
        self.register_buffer("mean", torch.zeros(n_feats))
        self.register_buffer("std", torch.ones(n_feats))

    # --- normalisation (the corpus statistics travel with the weights) ---------------------------
    def set_normalization(self, mean, std) -> MotionDenoiser:
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean.shape != (self.n_feats,) or std.shape != (self.n_feats,) or bool((std <= 0).any()):
            raise ValueError(f"Mean / Std must be ({self.n_feats},) with Std > 0; got {tuple(mean.shape)}, "
                             f"{tuple(std.shape)}")
        self.mean.copy_(mean)
        self.std.copy_(std)
        return self

    def normalize(self, feats: torch.Tensor) -> torch.Tensor:
        """Raw features (..., T, C) -> normalised (..., T, C)."""
        return (feats - self.mean.to(feats)) / self.std.to(feats)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised features (..., T, C) -> raw HumanML3D features (..., T, C)."""
        return x * self.std.to(x) + self.mean.to(x)

    # --- the denoiser ----------------------------------------------------------------------------
    def scalings(self, sigma):
        """EDM's c_in; with prediction="x0" the network's output is the estimate itself (c_skip 0,
        c_out 1), as in MDM: nothing of the noisy input reaches the output past the network."""
        c_skip, c_out, c_in = EDMPrecond.scalings(self, sigma)
        return (0.0, 1.0, c_in) if self.prediction == "x0" else (c_skip, c_out, c_in)

    def forward(self, x, sigma, *, net_output: bool = False, tokens=None, token_mask=None, pooled=None,
                mask: torch.Tensor | None = None):
        """x: (B, C, T); sigma: (B,); tokens (B, L, text_dim), token_mask (B, L), pooled (B, text_dim): the
        text condition as plain tensors (so guidance can batch cond and uncond), None = the null one;
        mask: (B, T) True on real frames."""
        cond = self.null(x.shape[0]) if tokens is None else Condition(tokens, token_mask, pooled)
        return EDMPrecond.forward(self, x, sigma, net_output=net_output, cond=cond.to(x.dtype), mask=mask)

    def condition_kwargs(self, cond: Condition | None, length: int | None = None) -> dict:
        """Keyword arguments of the denoiser for a `Condition` (None = the null condition), its token
        sequence padded to `length` so conditional and unconditional passes line up in one batch."""
        if cond is None:
            raise ValueError("condition_kwargs needs a Condition; use null_kwargs for the null one")
        cond = cond.pad_to(max(length or 0, cond.tokens.shape[1]))
        return {"tokens": cond.tokens, "token_mask": cond.mask, "pooled": cond.pooled}

    def null_kwargs(self, batch: int, length: int = 1) -> dict:
        return self.condition_kwargs(self.null(batch), length)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
