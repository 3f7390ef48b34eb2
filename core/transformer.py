"""Attention, the transformer block, and a DiT-style denoiser for sequences and images.

`Attention` is the one attention layer of the project (the U-Nets use it too): multi-head, self- or
cross-attention, with a key mask, on top of `torch.nn.functional.scaled_dot_product_attention`.

`DiT` follows Peebles & Xie (2023): tokens go through pre-LN blocks whose LayerNorms are modulated by
the noise embedding (adaLN-Zero: shift, scale and a residual gate per branch, all regressed from the
embedding by a zero-initialised linear layer, so each block starts as the identity), plus an optional
cross-attention to a condition sequence (as in PixArt-alpha). The final projection is zero-initialised,
so an untrained net outputs 0 and the preconditioned denoiser starts at c_skip * x.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from polydiff.core.checkpoint import ModelMixin
from polydiff.core.embeddings import NoiseEmbedding, sinusoidal_positions, sinusoidal_positions_2d
from torch import nn


class Attention(nn.Module):
    """x: (B, N, dim), context: (B, M, context_dim) or None (self-attention), key_mask: (B, M) bool.

    key_mask True marks keys that may be attended to. A query whose keys are all masked gets 0
    (not the NaN a softmax over nothing would give), so a sample with an empty condition simply
    receives no cross-attention update.
    """

    def __init__(self, dim: int, heads: int = 4, context_dim: int | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(context_dim or dim, 2 * dim)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x, context=None, key_mask=None):
        context = x if context is None else context
        b, n, d = x.shape
        q = self.to_q(x).view(b, n, self.heads, -1).transpose(1, 2)  # (B, H, N, d/H)
        k, v = self.to_kv(context).view(b, context.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        attn_mask, any_key = None, None
        if key_mask is not None:
            key_mask = key_mask.bool()
            any_key = key_mask.any(-1)  # (B,)
            # Rows with no key at all would be NaN; let them see everything, then zero them below.
            attn_mask = (key_mask | ~any_key[:, None])[:, None, None, :]  # (B, 1, 1, M)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = self.to_out(out.transpose(1, 2).reshape(b, n, d))
        if any_key is not None:
            out = out * any_key[:, None, None].to(out.dtype)
        return out


def modulate(x, shift, scale):
    return x * (1 + scale) + shift


class Block(nn.Module):
    """Pre-LN transformer block: self-attention, optional cross-attention, MLP.

    With `emb_dim` the block is adaLN-Zero conditioned on an embedding (B, emb_dim); without it, it
    is a plain encoder block (used by the token / frame conditioners).
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, context_dim: int | None = None,
                 emb_dim: int | None = None):
        super().__init__()
        affine = emb_dim is None  # under adaLN the embedding supplies scale and shift
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=affine, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.cross = None
        if context_dim is not None:
            self.norm_cross = nn.LayerNorm(dim, eps=1e-6)
            self.cross = Attention(dim, heads, context_dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=affine, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.ada = None
        if emb_dim is not None:
            self.ada = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 6 * dim))
            nn.init.zeros_(self.ada[1].weight)
            nn.init.zeros_(self.ada[1].bias)

    def forward(self, x, emb=None, key_mask=None, context=None, context_mask=None):
        """x: (B, N, dim); emb: (B, emb_dim); key_mask: (B, N); context: (B, M, c); context_mask: (B, M)."""
        if self.ada is not None:
            shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(emb)[:, None].chunk(6, dim=-1)
            x = x + gate1 * self.attn(modulate(self.norm1(x), shift1, scale1), key_mask=key_mask)
        else:
            x = x + self.attn(self.norm1(x), key_mask=key_mask)
        if self.cross is not None and context is not None:
            x = x + self.cross(self.norm_cross(x), context, context_mask)
        if self.ada is not None:
            return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))
        return x + self.mlp(self.norm2(x))


class DiT(ModelMixin):
    """Transformer denoiser F(x, c_noise, cond) for sequences (B, C, T) or images (B, C, H, W).

    Sequences: every `patch_size` frames make a token (1 = a token per frame). mask (B, T) bool marks
    the real frames of variable-length sequences: padded frames are zeroed on input, are never attended
    to, and come out as 0; the output on real frames does not depend on them.
    Images (`image=True`): non-overlapping patch_size x patch_size patches; H and W need not divide by
    the patch size (zero-padded on the right/bottom, masked, cropped after).
    positions: "sinusoidal" (1D or 2D sin/cos, any length), "learned" (a table of `max_len` entries per
    axis), or "none" (the net is then equivariant to permutations of the tokens).
    cond: a `polydiff.core.conditioning.Condition`; its tokens (B, L, cond_dim) are cross-attended with
    its mask when `cond_dim` is set, its pooled vector (B, pooled_dim) joins the noise embedding when
    `pooled_dim` is set.
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, dim: int = 256, depth: int = 6,
                 heads: int = 4, mlp_ratio: float = 4.0, patch_size: int = 1, image: bool = False,
                 positions: str = "sinusoidal", max_len: int = 1024, cond_dim: int | None = None,
                 pooled_dim: int | None = None, noise_embedding: str = "fourier"):
        super().__init__()
        if positions not in ("sinusoidal", "learned", "none"):
            raise ValueError(f"positions must be 'sinusoidal', 'learned' or 'none', got {positions!r}")
        self.in_channels, self.out_channels = in_channels, out_channels or in_channels
        self.dim, self.patch_size, self.image, self.positions, self.max_len = dim, patch_size, image, positions, max_len
        patch = patch_size ** (2 if image else 1)
        self.embed = nn.Linear(in_channels * patch, dim)
        if positions == "learned":
            self.pos = nn.Parameter(torch.randn(2 if image else 1, max_len, dim) * 0.02)
        self.noise_emb = NoiseEmbedding(dim, kind=noise_embedding)
        self.pooled_proj = nn.Linear(pooled_dim, dim) if pooled_dim else None
        self.blocks = nn.ModuleList(
            [Block(dim, heads, mlp_ratio, context_dim=cond_dim, emb_dim=dim) for _ in range(depth)]
        )
        self.norm_out = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.proj_out = nn.Linear(dim, self.out_channels * patch)
        for layer in (self.ada_out[1], self.proj_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    # --- tokens <-> frames / pixels -------------------------------------------------------------
    def _position_code(self, grid: tuple[int, ...], device) -> torch.Tensor | None:
        if self.positions == "none":
            return None
        if self.positions == "sinusoidal":
            if self.image:
                return sinusoidal_positions_2d(*grid, self.dim, device)
            return sinusoidal_positions(grid[0], self.dim, device)
        if max(grid) > self.max_len:
            raise ValueError(f"{max(grid)} tokens along an axis but learned positions hold max_len={self.max_len}; "
                             "build the net with a larger max_len or positions='sinusoidal'")
        if self.image:
            h, w = grid
            return (self.pos[0, :h, None] + self.pos[1, None, :w]).reshape(h * w, self.dim)
        return self.pos[0, : grid[0]]

    def _patchify(self, x):
        p = self.patch_size
        if self.image:
            b, c, h, w = x.shape
            x = x.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)  # (B, H/p, W/p, C, p, p)
            return x.reshape(b, (h // p) * (w // p), c * p * p), (h // p, w // p)
        b, c, t = x.shape
        x = x.view(b, c, t // p, p).permute(0, 2, 1, 3)  # (B, T/p, C, p)
        return x.reshape(b, t // p, c * p), (t // p,)

    def _unpatchify(self, tokens, grid):
        p, c, b = self.patch_size, self.out_channels, tokens.shape[0]
        if self.image:
            h, w = grid
            x = tokens.view(b, h, w, c, p, p).permute(0, 3, 1, 4, 2, 5)
            return x.reshape(b, c, h * p, w * p)
        return tokens.view(b, grid[0], c, p).permute(0, 2, 1, 3).reshape(b, c, grid[0] * p)

    def forward(self, x, c_noise, cond=None, mask=None):
        """x: (B, C, T) or (B, C, H, W); c_noise: (B,); mask: (B, T) or (B, H, W) bool or None."""
        want = 4 if self.image else 3
        if x.dim() != want:
            raise ValueError(f"DiT(image={self.image}) expects a {want}-D input, got shape {tuple(x.shape)}")
        spatial = x.shape[2:]
        pads = [-s % self.patch_size for s in spatial]
        if any(pads) and mask is None:
            mask = torch.ones((x.shape[0], *spatial), dtype=torch.bool, device=x.device)
        if mask is not None:
            mask = mask.bool()
            x = x * mask[:, None].to(x.dtype)
            pad_arg = [q for pad in reversed(pads) for q in (0, pad)]
            x, mask = F.pad(x, pad_arg), F.pad(mask, pad_arg, value=False)
        tokens, grid = self._patchify(x)  # (B, N, C p^k)
        key_mask = None
        if mask is not None:
            key_mask = self._patchify(mask[:, None].float())[0].amax(-1) > 0  # (B, N): any real frame
        h = self.embed(tokens)
        pos = self._position_code(grid, x.device)
        if pos is not None:
            h = h + pos.to(h.dtype)

        emb = self.noise_emb(c_noise, x.shape[0])  # (B, dim)
        if self.pooled_proj is not None and cond is not None:
            emb = emb + self.pooled_proj(cond.pooled.to(emb.dtype))
        context = context_mask = None
        if cond is not None and self.blocks[0].cross is not None:
            context, context_mask = cond.tokens.to(h.dtype), cond.mask
        for block in self.blocks:
            h = block(h, emb, key_mask=key_mask, context=context, context_mask=context_mask)

        shift, scale = self.ada_out(emb)[:, None].chunk(2, dim=-1)
        out = self._unpatchify(self.proj_out(modulate(self.norm_out(h), shift, scale)), grid)
        if mask is not None:
            out = out * mask[:, None].to(out.dtype)
            out = out[(..., *[slice(0, s) for s in spatial])]
        return out
