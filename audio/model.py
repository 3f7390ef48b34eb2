"""The spectrogram diffusion model: a denoiser over one segment's mel, cross-attending to its notes and to
the previous segment (after Hawthorne et al. 2022, "Multi-instrument Music Synthesis with Spectrogram
Diffusion").

    notes  (B, L) token ids  --TokenConditioner-->  (B, L, cond_dim)  --+
    context mel (B, 128, 256) --FrameConditioner--> (B, 256/stride, cond_dim) --+-- one key sequence
    noisy mel (B, 128, 256) + piano roll (B, 128, 256) [+ mel template (B, 128, 256)]
        --backbone--> F, cross-attending to both

Backbone: the core UNet1D with mel bins (and roll pitches) as channels (default; cross-attention at its
lowest level and middle), or the core DiT with patches of `patch` frames. Why the U-Net: at low noise the
network must give back the noise itself, 1024 values per 8-frame patch, and a DiT token of width 256 can
only carry a rank-256 part of it through its linear output layer; what it cannot carry stays in the
sample as hiss. The U-Net keeps every frame at full width through its skip connections.

The two conditions are joined along the sequence (their masks too) and their pooled vectors side by side,
so one cross-attention serves both. Each is replaced by its own learned null condition where the
`use_notes` / `use_context` flags are False: in training at random (independently, for two-scale CFG),
at sampling time to form the unconditional passes (`guided_denoiser`).

Why an extra time field for the notes: event tokens carry time only as `time t` tokens in front of the
events, so a token's position in the sequence says nothing about when it sounds. Every token also gets the
embedding of the segment time it belongs to (the last `time` token before it, in bins of `time_bin`
10-ms steps), which lets the mel frames find their notes by cross-attention.

Why a piano roll besides the tokens: with a few thousand CPU training steps, cross-attention alone does
not learn to place notes in time. The same tokens are also decoded (`notes.decode_segments`) into a
frame-aligned roll (B, 128 pitches, 256 frames: velocity / 127 on the two onset frames, half that while the
note sounds), concatenated to the noisy mel as extra input channels (`roll=True`). It is part of the notes
condition: where the notes are dropped, the roll is all zeros.

Why a mel template besides the roll (`template=True`): the backbone sees mel bins as channels, so the
roll's pitches must be mapped to each note's harmonics in the mel bins by learned weights, which a few
thousand CPU steps do not find (the notes were heard in the right pitch classes but not at the right
frames). `mel_template` draws the notes straight onto the mel's frequency axis (a harmonic stack per
note, on the codec's dB scale, onsets 6 dB up), another 128 input channels; the network then only has
to turn that sketch into the instrument's spectrum. Also part of the notes condition (zeros where
dropped).

Why a learned template (`timbre=True`): the harmonic stack draws every instrument alike (harmonics at 1/k,
flat while held), and a few thousand CPU steps teach the network each instrument's spectrum and envelope
only in part. `timbre.Timbre` fits those per program to the corpus directly (a few hundred numbers
each, minutes of CPU) and draws the template with them; it is fitted before training and frozen, stored
in the checkpoint with the network.

Why a note bank (`timbre_bank=True`): a sound-font instrument plays a recorded sample from its start at
every note-on, and what the sample does after its attack (its own tremolo, a loop, a swell) comes back at
the same times after every note-on of that program and pitch; onset detection hears much of it. A few
numbers per program cannot hold it, so the renderer draws the corpus's programs from lone-note mels
measured from FluidSynth (`audio/bank.py`, about 10.5 MB in float16 at rank 6), the parameters above only for
other programs.

Why a residual model (`residual=True`): the network given the learned template still returned a mel
further from the render than the template itself (its output has to rebuild the whole mel through its
output layer). With `residual` the diffusion is of mel - template (`Centred`: D(x) = template +
D_r(x - template)), and a fine-tune from a full-mel model starts with its output layer at zero, so it
starts at the template and training can only move it by what the data says.

The network is the whole checkpoint (`AudioDiffusion`, a `ModelMixin`); `denoiser(model)` wraps it in EDM
preconditioning, the denoiser convention every sampler uses; `guided_denoiser` adds two-scale
classifier-free guidance for sampling.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from polydiff.core.checkpoint import ModelMixin
from polydiff.core.conditioning import Condition, FrameConditioner, NullCondition, TokenConditioner
from polydiff.core.guidance import cfg_denoiser
from polydiff.core.precond import EDMPrecond
from polydiff.core.transformer import DiT
from polydiff.core.unet import UNet1D

from .codec import N_FFT, N_MELS, SAMPLE_RATE, SEGMENT_FRAMES, db_to_unit, mel_filters
from .notes import VOCAB
from .timbre import Timbre, segment_notes

TEMPLATE_SCALE = 56.0          # mel_template levels: notes peak near the corpus level (-17 dB at template peaks)
DRUM_SCALE = 1.5             # drum bursts about as loud as the corpus drums

SILENCE = -1.0                         # the codec's value of silence: the context of a first segment


def join(a: Condition, b: Condition) -> Condition:
    """Two conditions of one batch as one key sequence: tokens and masks side by side along the sequence,
    pooled vectors concatenated (B, Da + Db)."""
    return Condition(torch.cat([a.tokens, b.tokens], 1), torch.cat([a.mask, b.mask], 1),
                     torch.cat([a.pooled, b.pooled], -1))


def choose(cond: Condition, null: NullCondition, keep: torch.Tensor) -> Condition:
    """cond where keep (B,) is True, the null condition (its tokens, mask and pooled) elsewhere."""
    if bool(keep.all()):
        return cond
    empty = null(len(cond)).pad_to(max(cond.tokens.shape[1], 1))
    cond = cond.pad_to(empty.tokens.shape[1])
    k = keep.to(cond.tokens.device)
    return Condition(torch.where(k[:, None, None], cond.tokens, empty.tokens.to(cond.tokens.dtype)),
                     torch.where(k[:, None], cond.mask, empty.mask),
                     torch.where(k[:, None], cond.pooled, empty.pooled.to(cond.pooled.dtype)))


def note_rolls(tokens: torch.Tensor, frames: int = SEGMENT_FRAMES) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens (B, L) of single segments -> (pitched, drums), each (B, 128, frames): for every decoded
    note, velocity / 127 on its first two frames and half that until its offset (drums: the two onset
    frames at their key). A note tied in from the previous segment has no onset here, only the sustain
    (at the tie velocity 64): its onset lies in the previous segment."""
    pitched = torch.zeros(tokens.shape[0], 128, frames)
    drums = torch.zeros(tokens.shape[0], 128, frames)
    fps = frames / (VOCAB.segment_steps * 0.01)
    for b, seg in enumerate(segment_notes(tokens, fps)):
        for on, off, pitch, velocity, _, is_drum, tied in seg:
            on = min(round(on), frames - 1)
            off = max(min(round(off), frames), on + 1)
            v = velocity / 127
            if is_drum:
                drums[b, pitch, on:on + 2] = torch.clamp(drums[b, pitch, on:on + 2], min=v)
                continue
            pitched[b, pitch, on:off] = torch.clamp(pitched[b, pitch, on:off], min=v / 2)
            if not tied:
                pitched[b, pitch, on:on + 2] = v
    return pitched.to(tokens.device), drums.to(tokens.device)


def piano_roll(tokens: torch.Tensor, frames: int = SEGMENT_FRAMES) -> torch.Tensor:
    """tokens (B, L) of single segments -> roll (B, 128, frames): pitched notes and drums of
    `note_rolls` in one picture (drums at their key)."""
    pitched, drums = note_rolls(tokens, frames)
    return torch.maximum(pitched, drums)


@lru_cache(maxsize=1)
def harmonic_table(harmonics: int = 16) -> torch.Tensor:
    """(128 pitches, 128 mel bins): the mel magnitude of a unit-level note of each MIDI pitch, harmonics
    k = 1..16 at amplitude 1/k (up to 8 kHz), each spread over the two STFT bins around its frequency."""
    n_bins = N_FFT // 2 + 1
    spec = torch.zeros(128, n_bins, dtype=torch.float64)
    f0 = 440.0 * 2 ** ((torch.arange(128, dtype=torch.float64) - 69) / 12)
    for k in range(1, harmonics + 1):
        pos = k * f0 / (SAMPLE_RATE / N_FFT)                  # fractional STFT bin of harmonic k
        lo = pos.floor().long()
        w = pos - lo
        ok = lo + 1 < n_bins
        rows = torch.arange(128)[ok]
        spec[rows, lo[ok]] += (1 - w[ok]) / k
        spec[rows, lo[ok] + 1] += w[ok] / k
    return (spec.float() @ mel_filters()).contiguous()


def mel_template(pitched: torch.Tensor, drums: torch.Tensor) -> torch.Tensor:
    """(B, 128 mel, frames) in [-1, 1]: the notes drawn in the mel's own frequency axis, a harmonic
    stack per sounding note at a level that follows the roll (velocity, onsets 6 dB up), drums as a
    flat broadband burst, on the codec's dB scale. Why: the denoiser sees mel bins as channels, and a
    condition already laid out along those channels needs no learned pitch -> harmonics map (a linear
    map of 128 x 128 the network otherwise has to find from a few thousand steps)."""
    table = harmonic_table().to(pitched.device, pitched.dtype)                       # (128 p, 128 m)
    level = TEMPLATE_SCALE * pitched.square()                                          # (B, 128 p, T)
    lin = torch.einsum("bpt,pm->bmt", level, table)
    flat = mel_filters().sum(0).to(pitched.device, pitched.dtype)                        # (128 m,)
    lin = lin + DRUM_SCALE * flat[None, :, None] * drums.square().sum(1, keepdim=True)
    db = 20 * torch.log10(lin.clamp_min(1e-10))
    return db_to_unit(db)


def token_times(ids: torch.Tensor, time_bin: int) -> torch.Tensor:
    """ids (B, L) -> (B, L) time bin of each token: the last `time t` token at or before it, // time_bin
    (the tie section, before any time token, is time 0)."""
    lo = VOCAB.time_offset
    is_time = (ids >= lo) & (ids < lo + VOCAB.n_time)
    t = torch.where(is_time, ids - lo, torch.zeros_like(ids))
    return torch.cummax(t, dim=1).values // time_bin


class AudioDiffusion(ModelMixin):
    """F(x_in, c_noise, tokens, context, use_notes, use_context) for one segment's mel.

    x_in: (B, 128, 256) preconditioned noisy mel; c_noise: (B,); tokens: (B, L) note token ids (pad 0);
    context: (B, 128, 256) previous segment's mel in [-1, 1] (silence -1 for a first segment);
    use_notes / use_context: (B,) bool, False = the null condition (default True)."""

    def __init__(self, n_mels: int = N_MELS, frames: int = SEGMENT_FRAMES, dim: int = 256, depth: int = 4,
                 heads: int = 4, patch: int = 4, cond_dim: int = 128, note_depth: int = 2,
                 context_depth: int = 1, context_stride: int = 8, time_bin: int = 8, max_tokens: int = 256,
                 sigma_data: float = 0.5, p_drop_notes: float = 0.1, p_drop_context: float = 0.1,
                 roll: bool = True, backbone: str = "unet", channels: int = 96,
                 channel_mult: tuple[int, ...] = (1, 2, 2), template: bool = False, p_mean: float = -1.2,
                 p_std: float = 1.2, timbre: bool = False, residual: bool = False, context_mean: bool = False,
                 timbre_subframe: bool = False, sharp_weight: float = 0.0, sharp_flux: float = 1.0,
                 sharp_sigma: float = 10.0, sharp_onset: float = 0.0, timbre_bank: bool = False):
        super().__init__()
        self.n_mels, self.frames, self.max_tokens, self.time_bin = n_mels, frames, max_tokens, time_bin
        self.sigma_data, self.p_drop_notes, self.p_drop_context = sigma_data, p_drop_notes, p_drop_context
        self.use_roll, self.use_template = roll, template or timbre
        if residual and not self.use_template:
            raise ValueError("residual=True diffuses the mel's difference from the template: set template or timbre")
        self.residual, self.context_mean = residual, context_mean
        if timbre:                 # the template drawn by the learned renderer; fitted beforehand, then frozen
            self.timbre = Timbre(frames, subframe=timbre_subframe, bank=timbre_bank).requires_grad_(False)
        elif timbre_bank:
            raise ValueError("timbre_bank=True draws the learned renderer's notes from a bank: set timbre too")
        self.p_mean, self.p_std = p_mean, p_std                # training noise levels (EDM log-normal)
        self.sharp_weight, self.sharp_flux, self.sharp_sigma = sharp_weight, sharp_flux, sharp_sigma  # audio_loss
        self.sharp_onset = sharp_onset
        n_time_bins = VOCAB.n_time // time_bin + 1
        self.notes = TokenConditioner([VOCAB.size, n_time_bins], cond_dim, depth=note_depth, heads=heads,
                                      pad_id=VOCAB.pad)
        self.context = FrameConditioner(n_mels, cond_dim, depth=context_depth, heads=heads, stride=context_stride)
        self.null_notes = NullCondition(cond_dim)
        self.null_context = NullCondition(cond_dim)
        in_channels = n_mels + (128 if roll else 0) + (n_mels if self.use_template else 0)
        if backbone == "unet":
            self.net = UNet1D(in_channels, n_mels, channels=channels, channel_mult=tuple(channel_mult),
                              num_res_blocks=1, attn_levels=(len(channel_mult) - 1,), heads=heads,
                              cond_dim=cond_dim, pooled_dim=2 * cond_dim)
        elif backbone == "dit":
            self.net = DiT(in_channels, out_channels=n_mels, dim=dim, depth=depth, heads=heads, patch_size=patch,
                           cond_dim=cond_dim, pooled_dim=2 * cond_dim)
        else:
            raise ValueError(f"backbone must be 'unet' or 'dit', got {backbone!r}")

    def condition(self, tokens, context, use_notes=None, use_context=None,
                  roll=None) -> tuple[Condition, torch.Tensor | None]:
        """The cross-attention condition (notes, then context) and the note channels (`note_input`; pass
        `roll` when they are already drawn)."""
        b = context.shape[0]
        ones = torch.ones(b, dtype=torch.bool, device=context.device)
        use_notes = ones if use_notes is None else use_notes.bool()
        use_context = ones if use_context is None else use_context.bool()
        tokens = tokens[:, : self.max_tokens].long()
        ids = torch.stack([tokens, token_times(tokens, self.time_bin)], -1)       # (B, L, 2)
        notes = choose(self.notes(ids), self.null_notes, use_notes)
        ctx = choose(self.context(context), self.null_context, use_context)
        if roll is None:
            roll = self.note_input(tokens, use_notes)
        return join(notes, ctx), roll

    def note_input(self, tokens, use_notes=None) -> torch.Tensor | None:
        """(B, C, frames) the note channels appended to the noisy mel (piano roll, template), zeros where
        the notes are dropped; None for a model without them."""
        if not self.note_channels:
            return None
        tokens = tokens[:, : self.max_tokens].long()
        pitched, drums = note_rolls(tokens, self.frames)
        parts = [torch.maximum(pitched, drums)] if self.use_roll else []
        if self.use_template:                      # 0 = silence - 1 where dropped, like the roll
            sketch = self.timbre(tokens) if hasattr(self, "timbre") else mel_template(pitched, drums)
            parts.append(sketch + 1)
        roll = torch.cat(parts, 1)
        return roll if use_notes is None else roll * use_notes.to(roll.device)[:, None, None].to(roll.dtype)

    @property
    def note_channels(self) -> bool:
        return self.use_roll or self.use_template

    def mean_of(self, roll, context=None, use_notes=None, use_context=None) -> torch.Tensor | float:
        """The mel the diffusion is centred on (`residual`; 0 otherwise): the template drawn into the note
        channels (their last n_mels) where the notes are used. Where they are dropped: silence (-1), or
        with `context_mean` and the context used, each mel bin's mean over the context's last half second
        held (a free continuation then starts from the level the music was at).
        roll: (B, C, T) note channels; context: (B, 128, T); use_notes / use_context: (B,) bool (True)."""
        if not self.residual:
            return 0.0
        sketch = roll[:, -self.n_mels:] - 1
        b = roll.shape[0]
        yes = torch.ones(b, dtype=torch.bool, device=roll.device)
        use_notes = yes if use_notes is None else use_notes.to(roll.device).bool()
        other = torch.full_like(sketch, SILENCE)
        if self.context_mean and context is not None:
            use_context = yes if use_context is None else use_context.to(roll.device).bool()
            held = context[..., -25:].mean(-1, keepdim=True).to(sketch.dtype).expand_as(sketch)
            other = torch.where(use_context[:, None, None], held, other)
        return torch.where(use_notes[:, None, None], sketch, other)

    def denoise(self, x, c_noise, cond: Condition, roll=None):
        """The backbone on the noisy mel (B, 128, T) with the note channels (roll, template) appended."""
        if self.note_channels:
            x = torch.cat([x, roll.to(x.dtype)], 1)
        return self.net(x, c_noise, cond=cond)

    def forward(self, x, c_noise, tokens, context, use_notes=None, use_context=None, roll=None):
        return self.denoise(x, c_noise, *self.condition(tokens, context, use_notes, use_context, roll))


class Centred(torch.nn.Module):
    """D(x, sigma, **kw) = mean + D_r(x - mean, sigma, **kw): a denoiser of the residual about a known
    mean (`AudioDiffusion.residual`), as a denoiser of the mel itself, so every sampler and CFG apply
    unchanged. mean_of(**kw) gives the mean of the batch the keywords select."""

    def __init__(self, den, mean_of):
        super().__init__()
        self.den, self.mean_of = den, mean_of

    def forward(self, x, sigma, **kw):
        mean = self.mean_of(**kw)
        return mean + self.den(x - mean, sigma, **kw)


def denoiser(model: AudioDiffusion):
    """D(x, sigma, tokens=, context=, use_notes=, use_context=) -> clean mel estimate (EDM preconditioning;
    about the template for a `residual` model)."""
    den = EDMPrecond(model, sigma_data=model.sigma_data)
    if not model.residual:
        return den
    return Centred(den, lambda tokens, context, use_notes=None, use_context=None, **_: model.mean_of(
        model.note_input(tokens, use_notes), context, use_notes, use_context))


def onset_envelope(mel: torch.Tensor) -> torch.Tensor:
    """(..., T - 1): the mel's rise from each frame to the next, averaged over the mel bins (falls count 0)."""
    return (mel[..., 1:] - mel[..., :-1]).clamp(min=0).mean(-2)


def audio_loss(model, batch, generator):
    """The training loss for `core.train.fit`: EDM loss on (mel, tokens, context) with notes and context
    each dropped (replaced by its null condition) with its own probability, independently.

    With sharp_weight > 0, plus sharp_weight x an L1 loss on what the default sampler returns, D(0,
    sharp_sigma) (one step from sigma_max at temperature 0, see `pipeline.sample_segment`): |D - mel| +
    sharp_flux |its frame-to-frame change - the mel's|. Why: the EDM loss alone makes D(0, sigma_max) the
    conditional mean, which spreads an attack whose exact shape varies over several frames (a slow rise
    that onset detection splits into two or misses); L1 on the frame differences prefers the typical
    (median) change, a step where the music steps. sharp_onset > 0 adds sharp_weight x sharp_onset x
    the L1 distance between the two mels' onset envelopes (`onset_envelope`: the rise from frame to frame
    averaged over the mel bins, what onset detectors peak-pick), so a note entering under held ones
    rises as much as it does in the music."""
    from polydiff.core.losses import diffusion_loss

    mel, tokens, context = batch
    raw = getattr(model, "module", model)
    b, dev = mel.shape[0], mel.device
    u = torch.rand(2, b, generator=generator, device=generator.device).to(dev)
    cond = {"tokens": tokens, "context": context, "use_notes": u[0] >= raw.p_drop_notes,
            "use_context": u[1] >= raw.p_drop_context}
    param = EDMPrecond(model, sigma_data=raw.sigma_data, P_mean=raw.p_mean, P_std=raw.p_std)
    if raw.residual:               # the diffusion is of mel - its mean (the template where notes are given)
        with torch.no_grad():      # the note channels, drawn once: for the mean and as the network's input
            cond["roll"] = raw.note_input(tokens, cond["use_notes"]).to(mel.dtype)
        mean = raw.mean_of(cond["roll"], context, cond["use_notes"], cond["use_context"])
        mel = mel - mean
    loss = diffusion_loss(param, mel, cond, generator=generator)
    if raw.sharp_weight > 0:       # residual: the sampler's x = 0 is -mean here, and D and mel are both - mean
        x = -mean if raw.residual else torch.zeros_like(mel)
        err = param(x, torch.full((b,), raw.sharp_sigma, device=dev), **cond) - mel
        sharp = err.abs().mean() + raw.sharp_flux * (err[..., 1:] - err[..., :-1]).abs().mean()
        if raw.sharp_onset > 0:
            full = mean if raw.residual else 0.0
            sharp = sharp + raw.sharp_onset * (onset_envelope(err + mel + full) - onset_envelope(mel + full)).abs().mean()
        loss = loss + raw.sharp_weight * sharp
    return loss


def guided_denoiser(model: AudioDiffusion, tokens, context, cfg_notes: float = 1.0, cfg_context: float = 1.0,
                    use_notes: bool = True):
    """D(x, sigma) for one batch of segments with two-scale classifier-free guidance (as InstructPix2Pix):

        D(0, 0) + cfg_context (D(0, c) - D(0, 0)) + cfg_notes (D(n, c) - D(0, c))

    n = notes, c = context, 0 = the null condition. Scales of 1 give D(n, c) exactly (one pass); with
    cfg_context = 1 it is plain CFG on the notes (`core.guidance.cfg_denoiser`, one doubled batch).
    Without notes (free continuation) only the context scale applies: D(0, 0) + cfg_context (D(0, c) - D(0, 0)).
    The conditions do not depend on x or sigma, so they are encoded once here, not at every step."""
    b = context.shape[0]
    on = torch.ones(b, dtype=torch.bool, device=context.device)
    off = ~on
    if not use_notes:
        passes, scale = [(off, on), (off, off)], cfg_context
    elif cfg_context == 1.0:
        passes, scale = ([(on, on)] if cfg_notes == 1.0 else [(on, on), (off, on)]), cfg_notes
    else:
        passes, scale = [(on, on), (off, on), (off, off)], None
    with torch.no_grad():
        both = [model.condition(tokens, context, n, c) for n, c in passes]
    conds = Condition.cat([c for c, _ in both])                                  # (len(passes) B)
    rolls = torch.cat([r for _, r in both]) if model.note_channels else None
    rows = [torch.arange(i * b, (i + 1) * b, device=context.device) for i in range(len(passes))]

    def net(x, c_noise, rows):
        return model.denoise(x, c_noise, conds.select(rows), None if rolls is None else rolls[rows])

    den = EDMPrecond(net, sigma_data=model.sigma_data)
    if model.residual:
        means = torch.cat([model.mean_of(r, context, n, c) for (n, c), (_, r) in zip(passes, both)])
        den = Centred(den, lambda rows: means[rows])
    if len(passes) == 1:
        return lambda x, sigma: den(x, sigma, rows=rows[0])
    if len(passes) == 2:
        return cfg_denoiser(den, scale, {"rows": rows[0]}, {"rows": rows[1]})
    every = torch.cat(rows)

    def guided(x, sigma):
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(b)
        d_nc, d_c, d_0 = den(x.repeat(3, *[1] * (x.ndim - 1)), sigma.repeat(3), rows=every).chunk(3)
        return d_0 + cfg_context * (d_c - d_0) + cfg_notes * (d_nc - d_c)

    return guided
