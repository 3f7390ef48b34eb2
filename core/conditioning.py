"""Conditions for the backbones, and what classifier-free guidance needs to train and sample.

Every conditioner returns a `Condition`: a sequence of token embeddings with a key mask (for
cross-attention) and one pooled vector (added to the noise embedding). The backbones in
`polydiff.core.unet` / `polydiff.core.transformer` accept it as `net(x, c_noise, cond=Condition)`,
whatever produced it: text (`polydiff.core.text.TextEncoder`), class labels, note tokens, or the
frames of a previous segment.

Classifier-free guidance (Ho & Salimans 2022) trains one network for both the conditional and the
unconditional denoiser by replacing the condition with a learned null condition for a fraction of
the samples (`condition_dropout`); at sampling time `NullCondition(batch)` is the unconditional input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from polydiff.core.embeddings import sinusoidal_positions
from polydiff.core.transformer import Block
from torch import nn


@dataclass
class Condition:
    """tokens: (B, L, D) float; mask: (B, L) bool, True = a real token; pooled: (B, D) float."""

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    def __post_init__(self):
        b, l = self.tokens.shape[:2]
        if self.tokens.dim() != 3 or tuple(self.mask.shape) != (b, l) or self.pooled.shape[0] != b:
            raise ValueError(
                f"Condition needs tokens (B, L, D), mask (B, L) and pooled (B, D); got tokens "
                f"{tuple(self.tokens.shape)}, mask {tuple(self.mask.shape)}, pooled {tuple(self.pooled.shape)}"
            )
        self.mask = self.mask.bool()

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def to(self, *args, **kwargs) -> Condition:
        # The mask stays bool whatever dtype the float parts move to.
        tokens, pooled = self.tokens.to(*args, **kwargs), self.pooled.to(*args, **kwargs)
        return Condition(tokens, self.mask.to(tokens.device), pooled)

    def pad_to(self, length: int) -> Condition:
        """Append masked zero tokens up to `length` (a no-op if already that long)."""
        extra = length - self.tokens.shape[1]
        if extra < 0:
            raise ValueError(f"cannot pad a condition of length {self.tokens.shape[1]} down to {length}")
        if extra == 0:
            return self
        tokens = nn.functional.pad(self.tokens, (0, 0, 0, extra))
        mask = nn.functional.pad(self.mask, (0, extra), value=False)
        return Condition(tokens, mask, self.pooled)

    def select(self, index) -> Condition:
        """The samples `index` (a slice, an index tensor or a bool mask over the batch)."""
        return Condition(self.tokens[index], self.mask[index], self.pooled[index])

    @staticmethod
    def cat(conds: list[Condition]) -> Condition:
        """Concatenate along the batch, padding the token sequences to the longest."""
        length = max(c.tokens.shape[1] for c in conds)
        conds = [c.pad_to(length) for c in conds]
        return Condition(*(torch.cat([getattr(c, k) for c in conds]) for k in ("tokens", "mask", "pooled")))


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """tokens (B, L, D), mask (B, L) -> (B, D): mean over the real tokens (0 for an empty row)."""
    m = mask.to(tokens.dtype)[..., None]
    return (tokens * m).sum(1) / m.sum(1).clamp(min=1.0)


class NullCondition(nn.Module):
    """The learned "no condition": `length` tokens and a pooled vector, trained through dropout."""

    def __init__(self, dim: int, pooled_dim: int | None = None, length: int = 1):
        super().__init__()
        self.tokens = nn.Parameter(torch.randn(length, dim) * 0.02)
        self.pooled = nn.Parameter(torch.randn(pooled_dim or dim) * 0.02)

    def forward(self, batch_size: int) -> Condition:
        tokens = self.tokens[None].expand(batch_size, -1, -1)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return Condition(tokens, mask, self.pooled[None].expand(batch_size, -1))


def condition_dropout(cond: Condition, null: NullCondition, p: float,
                      generator: torch.Generator | None = None) -> Condition:
    """Replace each sample's condition by the null condition with probability `p` (CFG training).

    The decision is per sample and drawn from `generator`; a dropped sample gets the null tokens,
    the null mask (so its own tokens are masked out entirely) and the null pooled vector together.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"condition dropout probability must be in [0, 1], got {p}")
    b = len(cond)
    if p == 0.0:
        return cond
    device = cond.tokens.device
    draw_on = generator.device if generator is not None else device
    drop = torch.rand(b, generator=generator, device=draw_on).to(device) < p  # (B,) True = use null
    empty = null(b)
    length = max(cond.tokens.shape[1], empty.tokens.shape[1])
    cond, empty = cond.pad_to(length), empty.pad_to(length)
    keep_t = ~drop[:, None, None]
    return Condition(
        tokens=torch.where(keep_t, cond.tokens, empty.tokens.to(cond.tokens.dtype)),
        mask=torch.where(~drop[:, None], cond.mask, empty.mask),
        pooled=torch.where(~drop[:, None], cond.pooled, empty.pooled.to(cond.pooled.dtype)),
    )


class ClassConditioner(nn.Module):
    """labels (B,) int -> one token per sample = the label's embedding; pooled = the same vector."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes, dim)

    def forward(self, labels: torch.Tensor) -> Condition:
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(f"class labels must lie in [0, {self.num_classes}); got {labels.min()}..{labels.max()}")
        e = self.table(labels)  # (B, D)
        return Condition(e[:, None], torch.ones(e.shape[0], 1, dtype=torch.bool, device=e.device), e)


class _Encoder(nn.Module):
    """Positions + a few pre-LN transformer blocks over (B, L, D) with a key mask."""

    def __init__(self, dim: int, depth: int, heads: int):
        super().__init__()
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> Condition:
        h = h + sinusoidal_positions(h.shape[1], h.shape[2], h.device).to(h.dtype)
        for block in self.blocks:
            h = block(h, key_mask=mask)
        h = self.norm(h) * mask[..., None]
        return Condition(h, mask, masked_mean(h, mask))


class TokenConditioner(nn.Module):
    """Discrete token sequences (e.g. MIDI note events) -> Condition.

    ids: (B, L) for one vocabulary, or (B, L, F) for F fields (pitch, instrument, onset bin, ...) whose
    embeddings are summed; `vocab_sizes` is an int or the list of F sizes. mask: (B, L) bool, True = real;
    without one, `pad_id` (if set) marks padding (ids == pad_id in the first field), else all are real.
    """

    def __init__(self, vocab_sizes: int | list[int], dim: int, depth: int = 2, heads: int = 4,
                 pad_id: int | None = None):
        super().__init__()
        self.pad_id = pad_id
        sizes = [vocab_sizes] if isinstance(vocab_sizes, int) else list(vocab_sizes)
        self.fields = nn.ModuleList([nn.Embedding(n, dim) for n in sizes])
        self.encoder = _Encoder(dim, depth, heads)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> Condition:
        if ids.dim() == 2:
            ids = ids[..., None]
        if ids.shape[-1] != len(self.fields):
            raise ValueError(f"token ids have {ids.shape[-1]} fields, this conditioner expects {len(self.fields)}")
        if mask is None:
            mask = ids[..., 0] != self.pad_id if self.pad_id is not None else torch.ones(
                ids.shape[:2], dtype=torch.bool, device=ids.device)
        h = sum(table(ids[..., i]) for i, table in enumerate(self.fields))  # (B, L, D)
        return self.encoder(h, mask.bool())


class FrameConditioner(nn.Module):
    """Context frames (B, C, T) (e.g. the previous segment's mel frames) -> Condition of T // stride tokens.

    A strided 1D convolution makes one token per `stride` frames, then a small transformer encoder.
    mask: (B, T) bool over frames; a token is real when any of its frames is.
    """

    def __init__(self, in_channels: int, dim: int, depth: int = 2, heads: int = 4, stride: int = 1):
        super().__init__()
        self.stride = stride
        self.proj = nn.Conv1d(in_channels, dim, kernel_size=stride, stride=stride)
        self.encoder = _Encoder(dim, depth, heads)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> Condition:
        b, _, t = frames.shape
        if mask is None:
            mask = torch.ones(b, t, dtype=torch.bool, device=frames.device)
        pad = -t % self.stride
        frames = nn.functional.pad(frames * mask[:, None], (0, pad))  # padded frames contribute nothing
        mask = nn.functional.pad(mask.bool(), (0, pad), value=False)
        h = self.proj(frames).transpose(1, 2)  # (B, T', D)
        token_mask = mask.view(b, -1, self.stride).any(-1)
        return self.encoder(h, token_mask)
