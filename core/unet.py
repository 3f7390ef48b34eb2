"""U-Net denoisers for sequences (B, C, T) and images (B, C, H, W): one implementation, `dims` = 1 or 2.

The layout is the ADM / EDM one, made small: per level `num_res_blocks` residual blocks whose
GroupNorm is modulated by the noise embedding (scale and shift), attention (self, then cross to the
condition tokens) at the levels listed in `attn_levels`, strided-conv downsampling and
nearest-neighbour + conv upsampling, skip connections between the two halves, and a zero-initialised
output convolution (an untrained net outputs 0).

Lengths that do not divide by 2^(levels-1) and variable-length batches share one mechanism, a mask
over positions (B, *spatial) bool, True = real:
- the input is zero-padded on the right (and bottom) to the next multiple, the added positions are
  marked not real, and the output is cropped back;
- before every operation that mixes positions (convolution, attention, GroupNorm statistics) the
  non-real positions are zeroed / left out, so nothing read from them reaches a real position.
The output on real positions therefore does not depend on what the padded positions hold (or how
many there are); non-real positions come out as 0. Attention uses no position code: the convolutions
locate features, so the net commutes with shifts by multiples of 2^(levels-1) (given the mask).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from polydiff.core.checkpoint import ModelMixin
from polydiff.core.embeddings import NoiseEmbedding
from polydiff.core.transformer import Attention
from torch import nn


def _conv(dims: int, cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Module:
    return (nn.Conv1d if dims == 1 else nn.Conv2d)(cin, cout, kernel, stride=stride, padding=kernel // 2)


class MaskedGroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics are taken over the real positions only. m: (B, 1, *spatial) float."""

    def forward(self, x, m=None):
        if m is None:
            return super().forward(x)
        b, c = x.shape[:2]
        g = x.float().view(b, self.num_groups, -1, *x.shape[2:])  # (B, G, C/G, *S); fp32 even under autocast
        gm = m.float()[:, None]  # (B, 1, 1, *S)
        dims = tuple(range(2, g.dim()))
        count = (gm.sum(dims, keepdim=True) * g.shape[2]).clamp(min=1.0)
        mean = (g * gm).sum(dims, keepdim=True) / count
        var = (((g - mean) * gm) ** 2).sum(dims, keepdim=True) / count
        y = ((g - mean) * torch.rsqrt(var + self.eps)).view_as(x)
        shape = (1, c) + (1,) * (x.dim() - 2)
        return (y * self.weight.view(shape) + self.bias.view(shape)).to(x.dtype)


def _zero(x, m):
    return x if m is None else x * m


class ResBlock(nn.Module):
    """x -> conv(SiLU(GN(x))) -> SiLU(GN(h) * (1 + scale) + shift) -> conv, plus a (1x1) skip."""

    def __init__(self, dims: int, cin: int, cout: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm0 = MaskedGroupNorm(groups, cin)
        self.conv0 = _conv(dims, cin, cout)
        self.affine = nn.Linear(emb_dim, 2 * cout)
        self.norm1 = MaskedGroupNorm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = _conv(dims, cout, cout)
        self.skip = _conv(dims, cin, cout, kernel=1) if cin != cout else nn.Identity()

    def forward(self, x, emb, m):
        h = self.conv0(_zero(F.silu(self.norm0(x, m)), m))
        scale, shift = self.affine(emb)[(..., *[None] * (x.dim() - 2))].chunk(2, dim=1)
        h = F.silu(self.norm1(h, m) * (1 + scale) + shift)
        h = self.conv1(_zero(self.dropout(h), m))
        return _zero(self.skip(x) + h, m)


class AttnBlock(nn.Module):
    """Self-attention over all positions, then (if `cond_dim`) cross-attention to the condition tokens."""

    def __init__(self, channels: int, heads: int, groups: int, cond_dim: int | None):
        super().__init__()
        self.norm = MaskedGroupNorm(groups, channels)
        self.attn = Attention(channels, heads)
        self.cross = None
        if cond_dim is not None:
            self.norm_cross = nn.LayerNorm(channels)
            self.cross = Attention(channels, heads, cond_dim)

    def forward(self, x, m, cond):
        shape = x.shape
        key_mask = None if m is None else m.flatten(1) > 0  # (B, N)
        h = x + self.attn(self.norm(x, m).flatten(2).transpose(1, 2), key_mask=key_mask).transpose(1, 2).view(shape)
        if self.cross is not None and cond is not None:
            tokens = h.flatten(2).transpose(1, 2)  # (B, N, C)
            out = self.cross(self.norm_cross(tokens), cond.tokens.to(h.dtype), cond.mask)
            h = h + out.transpose(1, 2).view(shape)
        return _zero(h, m)


class UNet(ModelMixin):
    """F(x, c_noise, cond=None, mask=None) for x (B, C, *spatial) with len(spatial) == dims.

    channel_mult: width multiplier per level (levels = len(channel_mult)); attn_levels: the levels (0 =
    full resolution) that get attention blocks; the middle gets one unless `mid_attention=False`.
    cond: a `Condition`; its tokens are cross-attended (needs `cond_dim`), its pooled vector joins the
    noise embedding (needs `pooled_dim`).
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, dims: int = 1, channels: int = 64,
                 channel_mult: tuple[int, ...] = (1, 2, 2), num_res_blocks: int = 2,
                 attn_levels: tuple[int, ...] = (2,), heads: int = 4, groups: int = 8, dropout: float = 0.0,
                 cond_dim: int | None = None, pooled_dim: int | None = None, noise_embedding: str = "fourier",
                 mid_attention: bool = True):
        super().__init__()
        if dims not in (1, 2):
            raise ValueError(f"UNet dims must be 1 (sequences) or 2 (images), got {dims}")
        self.dims, self.levels = dims, len(channel_mult)
        emb_dim = 4 * channels
        self.noise_emb = NoiseEmbedding(emb_dim, kind=noise_embedding)
        self.pooled_proj = nn.Linear(pooled_dim, emb_dim) if pooled_dim else None
        self.conv_in = _conv(dims, in_channels, channels)

        def res(cin, cout):
            return ResBlock(dims, cin, cout, emb_dim, groups, dropout)

        def attn(level, c):
            return AttnBlock(c, heads, groups, cond_dim) if level in attn_levels else None

        self.down = nn.ModuleList()
        skips, c = [channels], channels
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.down.append(nn.ModuleList([res(c, channels * mult), attn(level, channels * mult)]))
                c = channels * mult
                skips.append(c)
            if level < self.levels - 1:
                self.down.append(_conv(dims, c, c, stride=2))
                skips.append(c)
        mid_attn = AttnBlock(c, heads, groups, cond_dim) if mid_attention else None
        self.mid = nn.ModuleList([res(c, c), mid_attn, res(c, c)])
        self.up = nn.ModuleList()
        for level in reversed(range(self.levels)):
            for _ in range(num_res_blocks + 1):
                cout = channels * channel_mult[level]
                self.up.append(nn.ModuleList([res(c + skips.pop(), cout), attn(level, cout)]))
                c = cout
            if level > 0:
                self.up.append(_conv(dims, c, c))  # after a nearest-neighbour x2
        self.norm_out = MaskedGroupNorm(groups, c)
        self.conv_out = _conv(dims, c, out_channels or in_channels)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x, c_noise, cond=None, mask=None):
        """x: (B, C, *spatial); c_noise: (B,); mask: (B, *spatial) bool or None (all real)."""
        if x.dim() != self.dims + 2:
            raise ValueError(f"UNet(dims={self.dims}) expects a {self.dims + 2}-D input, got {tuple(x.shape)}")
        spatial = x.shape[2:]
        unit = 2 ** (self.levels - 1)
        pads = [-s % unit for s in spatial]
        if any(pads) and mask is None:
            mask = torch.ones((x.shape[0], *spatial), dtype=torch.bool, device=x.device)
        m = None
        if mask is not None:
            pad_arg = [q for pad in reversed(pads) for q in (0, pad)]
            m = F.pad(mask.bool(), pad_arg, value=False)[:, None].to(x.dtype)  # (B, 1, *S)
            x = F.pad(x * mask[:, None].to(x.dtype), pad_arg)
        masks = [m]  # one per level
        for _ in range(self.levels - 1):
            pool = F.max_pool1d if self.dims == 1 else F.max_pool2d
            masks.append(None if m is None else pool(masks[-1], 2))

        emb = self.noise_emb(c_noise, x.shape[0])
        if self.pooled_proj is not None and cond is not None:
            emb = emb + self.pooled_proj(cond.pooled.to(emb.dtype))

        level = 0
        h = _zero(self.conv_in(x), m)
        skips = [h]
        for layer in self.down:
            if isinstance(layer, nn.ModuleList):
                h = layer[0](h, emb, masks[level])
                if layer[1] is not None:
                    h = layer[1](h, masks[level], cond)
            else:  # downsample: every block leaves its output zero off the mask
                level += 1
                h = _zero(layer(h), masks[level])
            skips.append(h)
        h = self.mid[0](h, emb, masks[level])
        if self.mid[1] is not None:
            h = self.mid[1](h, masks[level], cond)
        h = self.mid[2](h, emb, masks[level])
        for layer in self.up:
            if isinstance(layer, nn.ModuleList):
                h = layer[0](torch.cat([h, skips.pop()], dim=1), emb, masks[level])
                if layer[1] is not None:
                    h = layer[1](h, masks[level], cond)
            else:  # upsample
                level -= 1
                h = _zero(F.interpolate(h, scale_factor=2.0, mode="nearest"), masks[level])
                h = _zero(layer(h), masks[level])
        out = self.conv_out(_zero(F.silu(self.norm_out(h, m)), m))
        if m is not None:
            out = (out * m)[(..., *[slice(0, s) for s in spatial])]
        return out


class UNet1D(UNet):
    """1D U-Net for sequences (B, C, T): spectrogram frames, motion features. See `UNet`."""

    def __init__(self, in_channels: int, out_channels: int | None = None, channels: int = 64,
                 channel_mult: tuple[int, ...] = (1, 2, 2), num_res_blocks: int = 2,
                 attn_levels: tuple[int, ...] = (2,), heads: int = 4, groups: int = 8, dropout: float = 0.0,
                 cond_dim: int | None = None, pooled_dim: int | None = None, noise_embedding: str = "fourier",
                 mid_attention: bool = True):
        super().__init__(in_channels, out_channels, 1, channels, channel_mult, num_res_blocks, attn_levels,
                         heads, groups, dropout, cond_dim, pooled_dim, noise_embedding, mid_attention)


class UNet2D(UNet):
    """2D U-Net for images (B, C, H, W), e.g. the 3D plugin's text-conditioned image prior. See `UNet`."""

    def __init__(self, in_channels: int, out_channels: int | None = None, channels: int = 64,
                 channel_mult: tuple[int, ...] = (1, 2, 2), num_res_blocks: int = 2,
                 attn_levels: tuple[int, ...] = (2,), heads: int = 4, groups: int = 8, dropout: float = 0.0,
                 cond_dim: int | None = None, pooled_dim: int | None = None, noise_embedding: str = "fourier",
                 mid_attention: bool = True):
        super().__init__(in_channels, out_channels, 2, channels, channel_mult, num_res_blocks, attn_levels,
                         heads, groups, dropout, cond_dim, pooled_dim, noise_embedding, mid_attention)
