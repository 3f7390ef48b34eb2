"""A learned note renderer: each General MIDI program's spectrum and envelope, fitted to the corpus, drawing
a segment's notes straight onto the codec's mel (the template input of a `timbre=True` diffusion model).

Why: the fixed harmonic template (`model.mel_template`) draws every instrument the same way (harmonics at
1/k, flat while held), so the denoiser has to learn each instrument's spectrum and envelope from a few
thousand CPU steps, and does so only in part (its output is smoother than music). Those are a few hundred
numbers per instrument that a direct fit to the corpus finds in minutes; the denoiser is then
left with what they cannot say (the way notes interact, the room, the level of the mix).

Per program p (0..127; shared parameters plus a per-program difference, so a program the corpus never
plays gets the shared ones), a pitched note of pitch m, velocity v, onset frame a, offset frame b is

    mel(f, t) = A_p(m, v) * S_p(m, f) * E_p(t - a) * R_p(t - b)
    A_p = exp(level_p + tilt_p (m - 60) / 12) (v / 127) ** gamma_p
    S_p(m, f) = sum_k exp(h_pk) H(m, k, f) + exp(n_pf)    harmonics k = 1..16 through the mel filters,
                                                            plus a noise floor (bow, breath, hammer)
    E_p(j) = exp(e_pj) for j < 64 frames, then exp(e_p63 - d_p (j - 63))          attack and decay
    R_p(i) = exp(-i / r_p) for frames i after the offset (1 before)                 release

summed over the notes (linear magnitudes add) and taken to the codec's dB scale. A drum key's sound is
its own mel spectrum times a 32-frame envelope. A note tied in from the previous segment (no onset in
this one) is taken to be `TIED_FRAMES` into its envelope. H(m, k, f) puts harmonic k of pitch m on the
STFT bins around its frequency with the Hann window's main-lobe shape, then through the mel filters.

With bank=True (`timbre_bank` in the model config) the notes of the programs the bank holds (the corpus's,
and drums) are drawn from lone-note mels measured from FluidSynth instead (audio/bank.py: what a sample
does after its attack, which these parameters cannot say); notes of any other program are drawn as above.

`fit_timbre` fits the parameters to the training split of a corpus cache (L1 on the [-1, 1] mel and on
its frame-to-frame changes); the training recipe runs it before training (`train.fitted_timbre`).
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .bank import DRUMS, bank_rows, draw, empty_bank
from .bank import HIGH as BANK_HIGH
from .bank import LOW as BANK_LOW
from .codec import N_FFT, SAMPLE_RATE, SEGMENT_FRAMES, db_to_unit, mel_filters
from .notes import VOCAB, decode_segments

HARMONICS = 16
ENV_FRAMES = 64
DRUM_FRAMES = 32
TIED_FRAMES = 48
FPS = 50
SHARED = 128                      # index of the shared parameters


@lru_cache(maxsize=1)
def harmonic_mel_table() -> torch.Tensor:
    """(128 pitches, HARMONICS, 128 mel bins): the mel magnitude of harmonic k of each pitch at unit
    amplitude, spread over the STFT bins of the Hann window's main lobe (|sinc(d) / (1 - d^2)|)."""
    n_bins = N_FFT // 2 + 1
    spec = np.zeros((128, HARMONICS, n_bins))
    f0 = 440.0 * 2 ** ((np.arange(128) - 69) / 12)
    for k in range(1, HARMONICS + 1):
        pos = k * f0 / (SAMPLE_RATE / N_FFT)
        for off in (-1, 0, 1, 2):
            b = np.floor(pos).astype(int) + off
            d = b - pos
            with np.errstate(divide="ignore", invalid="ignore"):
                w = np.abs(np.sinc(d) / (1 - d ** 2))
            w = np.where(np.isclose(np.abs(d), 1.0), 0.5, w)
            ok = (b >= 0) & (b < n_bins) & (k * f0 < SAMPLE_RATE / 2)
            spec[np.arange(128)[ok], k - 1, b[ok]] += w[ok]
    return torch.from_numpy(spec).float() @ mel_filters()


def segment_notes(tokens: torch.Tensor, fps: float = FPS) -> list[list[tuple[float, float, int, int, int, bool, bool]]]:
    """tokens (B, L) of single segments -> per segment [(onset frame, offset frame, pitch, velocity,
    program, is_drum, tied)], frames at `fps` (fractional). tied: a note sounding in from the previous
    segment (listed in the tie section, starting at 0): its onset lies in the previous segment."""
    out = []
    for row in tokens.tolist():
        tied = set(row[: row.index(VOCAB.tie)]) if VOCAB.tie in row else set()
        notes = []
        for n in decode_segments([row]):
            on, off = n.onset * fps, n.offset * fps
            is_tied = (not n.is_drum and round(on) == 0 and VOCAB.pitch_offset + n.pitch in tied)
            notes.append((on, off, n.pitch, n.velocity, n.program, n.is_drum, is_tied))
        out.append(notes)
    return out


class Timbre(nn.Module):
    """The learned renderer (see the module docstring); forward(tokens) -> (B, 128, frames) in [-1, 1]."""

    def __init__(self, frames: int = SEGMENT_FRAMES, subframe: bool = False, bank: bool = False):
        super().__init__()
        self.frames, self.subframe, self.has_bank = frames, subframe, bank
        n = SHARED + 1
        k = torch.arange(1, HARMONICS + 1).float()
        self.harm = nn.Parameter(torch.zeros(n, HARMONICS))
        self.level = nn.Parameter(torch.zeros(n))
        self.tilt = nn.Parameter(torch.zeros(n))
        self.gamma = nn.Parameter(torch.zeros(n))
        self.noise = nn.Parameter(torch.zeros(n, 128))
        self.env = nn.Parameter(torch.zeros(n, ENV_FRAMES))
        self.decay = nn.Parameter(torch.zeros(n))
        self.release = nn.Parameter(torch.zeros(n))
        self.drum_spec = nn.Parameter(torch.zeros(n, 128))
        self.drum_env = nn.Parameter(torch.zeros(n, DRUM_FRAMES))
        with torch.no_grad():                   # shared start: the sine baseline's instrument
            self.harm[SHARED] = -torch.log(k)
            self.level[SHARED] = math.log(30.0)
            self.gamma[SHARED] = 2.0
            self.noise[SHARED] = -9.0
            self.env[SHARED] = -torch.arange(ENV_FRAMES).float() / (0.6 * FPS)
            self.decay[SHARED] = 1 / (0.6 * FPS)
            self.release[SHARED] = math.log(0.05 * FPS)
            self.drum_spec[SHARED] = math.log(0.5)
            self.drum_env[SHARED] = -torch.arange(DRUM_FRAMES).float() / (0.015 * FPS)
        self.register_buffer("table", harmonic_mel_table(), persistent=False)
        if bank:                    # lone-note mels (audio/bank.py), filled by `set_bank` or a checkpoint
            for name, value in empty_bank().items():
                self.register_buffer(f"bank_{name}", value)

    def set_bank(self, bank: dict[str, torch.Tensor]) -> None:
        """Load a bank (`bank.build_bank`) into a renderer made with bank=True; its shape must match."""
        if not self.has_bank:
            raise ValueError("this renderer was made without a note bank (bank=False)")
        for name, value in bank.items():
            buf = getattr(self, f"bank_{name}")
            if buf.shape != value.shape:
                raise ValueError(f"note bank {name}: shape {tuple(value.shape)}, the renderer holds {tuple(buf.shape)}")
            buf.copy_(value)

    def _p(self, name: str, idx: torch.Tensor) -> torch.Tensor:
        w = getattr(self, name)
        return w[SHARED] + w[idx]

    def penalty(self) -> torch.Tensor:
        """Squared size of the per-program differences (keeps unheard programs near the shared sound)."""
        return sum(getattr(self, n)[:SHARED].square().mean() for n in
                   ("harm", "level", "tilt", "gamma", "noise", "env", "decay", "release", "drum_spec", "drum_env"))

    def linear(self, notes: list[list[tuple]]) -> torch.Tensor:
        """(B, 128, frames) linear mel magnitude of each segment's notes."""
        dev = self.harm.device
        B, T = len(notes), self.frames
        counts = [len(x) for x in notes]
        if not any(counts):
            return torch.zeros(B, 128, T, device=dev)
        n_max = max(counts)
        rows = torch.tensor([x for seg in notes for x in seg], device=dev, dtype=torch.float64)
        on, off = rows[:, 0].float(), rows[:, 1].float()
        pitch, vel, prog = rows[:, 2].long(), rows[:, 3].float(), rows[:, 4].long()
        drum, tied = rows[:, 5].bool(), rows[:, 6].bool()
        t = torch.arange(T, device=dev).float()
        j = t[None] - on.round()[:, None] + torch.where(tied, TIED_FRAMES, 0)[:, None]        # (N, T)
        env = self._p("env", prog)
        if self.subframe:     # the envelope at the exact (10 ms) onset, between frames: attacks stay sharp
            jf = t[None] - on[:, None] + torch.where(tied, TIED_FRAMES, 0)[:, None] + 1   # 0: the frame before
            padded = torch.cat([torch.full_like(env[:, :1], -20.0), env], 1)
            i0 = jf.clamp(0, ENV_FRAMES).floor()
            w = (jf.clamp(0, ENV_FRAMES) - i0)
            i0 = i0.long()
            i1 = (i0 + 1).clamp(max=ENV_FRAMES)
            log_env = padded.gather(1, i0) * (1 - w) + padded.gather(1, i1) * w
            log_env = log_env - self._p("decay", prog)[:, None] * (jf - ENV_FRAMES).clamp(min=0)
        else:
            log_env = env.gather(1, j.clamp(0, ENV_FRAMES - 1).long()) - self._p("decay", prog)[:, None] * (j - (ENV_FRAMES - 1)).clamp(min=0)
        after = (t[None] - off.round()[:, None]).clamp(min=0)
        log_env = log_env - after / self._p("release", prog).exp()[:, None]
        key = pitch.clamp(0, 127)
        in_bank = torch.zeros_like(drum)
        if self.has_bank:           # notes of the bank's programs (and drums) are drawn from it, the others here
            brow = bank_rows(self.bank_programs)[torch.where(drum, DRUMS, prog.clamp(0, 127))]
            in_bank = (brow >= 0) & (drum | ((pitch >= BANK_LOW) & (pitch < BANK_HIGH)))   # else: drawn here
        djc = j.clamp(0, DRUM_FRAMES - 1).long()
        log_denv = self._p("drum_env", key).gather(1, djc)
        log_env = torch.where(drum[:, None], log_denv, log_env)
        sounding = (j >= 0) & ~(drum[:, None] & (j >= DRUM_FRAMES))
        if self.subframe:
            sounding = sounding | (~drum[:, None] & (jf > 0))
        amp = (self._p("level", prog) + self._p("tilt", prog) * (pitch.float() - 60) / 12
               + self._p("gamma", prog) * torch.log(vel / 127))
        spec = torch.einsum("nk,nkf->nf", self._p("harm", prog).exp(), self.table[key]) + self._p("noise", prog).exp()
        spec = torch.where(drum[:, None], self._p("drum_spec", key).exp(), spec) * amp.exp()[:, None]
        # per segment: (n_notes, 128) x (n_notes, T) summed over its notes, padded to one batch matmul
        seg = torch.repeat_interleave(torch.arange(B, device=dev), torch.tensor(counts, device=dev))
        slot = torch.cat([torch.arange(c, device=dev) for c in counts])
        S = torch.zeros(B, n_max, 128, device=dev).index_put((seg, slot), spec)
        E = torch.zeros(B, n_max, T, device=dev).index_put((seg, slot), log_env.exp() * sounding * ~in_bank[:, None])
        out = S.transpose(1, 2) @ E
        if in_bank.any():
            k = in_bank
            drawn = draw(self.bank_u, self.bank_v, self.bank_gamma, self.bank_offset, brow[k], on[k], off[k],
                         pitch[k], vel[k], drum[k], torch.where(tied[k], float(TIED_FRAMES), 0.0), T)
            out = out.index_add(0, seg[k], drawn)
        return out

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        lin = self.linear(segment_notes(tokens))
        return db_to_unit(20 * torch.log10(lin.clamp_min(1e-10)))


def fit_timbre(data, steps: int = 1200, batch: int = 32, lr: float = 0.03, seed: int = 0, flux: float = 1.0,
               progress: bool = True, subframe: bool = False) -> Timbre:
    """Fit a `Timbre` to the training segments of a corpus cache (a folder) or to a dataset of (mel, tokens,
    context) segments: Adam on the L1 distance of the [-1, 1] mels and of their frame-to-frame changes
    (weight `flux`: without it the attacks come out softer than the music's), plus a small penalty on
    the per-program differences."""
    from tqdm.auto import tqdm

    from .corpus import AudioSegments

    if isinstance(data, (str, Path)):
        data = AudioSegments(data, "train")
    gen = torch.Generator().manual_seed(seed)
    model = Timbre(subframe=subframe)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr * 0.05)
    decoded: dict[int, list] = {}
    bar = tqdm(range(steps), desc="fit timbre", disable=not progress)
    for _ in bar:
        idx = torch.randint(len(data), (batch,), generator=gen).tolist()
        mels, notes = [], []
        for i in idx:
            mel, tok, _ctx = data[i]
            if i not in decoded:
                decoded[i] = segment_notes(tok[None])[0]
            mels.append(mel)
            notes.append(decoded[i])
        target = torch.stack(mels)
        pred = db_to_unit(20 * torch.log10(model.linear(notes).clamp_min(1e-10)))
        loss = (pred - target).abs().mean() + 1e-3 * model.penalty()
        if flux:                                  # frame-to-frame changes too: attacks where the music has them
            loss = loss + flux * (pred.diff(dim=-1) - target.diff(dim=-1)).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(l1=f"{loss.item():.4f}")
    return model.eval()
