"""Note-timed attack shaping of a generated mel: the notes say where every attack is; the model's one-step
conditional mean draws most of them too softly.

What is missing, measured on the val pieces (a sampling loop over the shipped model's mels against the
FluidSynth renders, 2026-11-30): in the bins of a note's own harmonics the mean rises at an onset as much
as the render does, but across the other bins it rises about a third as much (choir, strings, winds: the
broadband part of an attack: breath, bow, mallet), and a note struck again at a pitch already sounding
often gets no new attack at all (a mallet piece's repeated chords came out as one held chord). Heard as
mushy attacks; measured as missed onsets.

The shaping, applied to the generated frames only (never to a given start, and not fed back as context):

* accent: at each note's onset frame every sounding bin (above -0.85, about -72 dB) is raised by
  `strength` (0.1 = 5 dB) for that one frame: the broadband attack;
* re-strike: a note whose pitch and program sound right up to its onset (within 30 ms) has its harmonic
  bins (8 partials, +-1 bin) lowered by 5 x strength the frame before and raised by 5 x strength x
  velocity / 100 at the onset, decaying over `TAU` frames: the gap and the new attack a re-struck
  string, key or bar makes.

Drums are left as the model draws them. Blocks shaped one after another give exactly the whole mel
shaped at once (every term is a function of the absolute frame), so streaming is unaffected. Figures that
chose the default are in `pipeline.Sampling`.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from functools import cache
from itertools import groupby

import numpy as np
import torch

from .codec import FRAMES_PER_SECOND, N_FFT, N_MELS, SAMPLE_RATE, mel_filters
from .notes import Note

LIVE = -0.85            # bins at or below this (about -72 dB) are silence: no accent is put there
RESTRIKE_GAP = 0.03     # s: a note sounding until this close before an onset of its pitch is re-struck
RESTRIKE = 5.0          # re-strike dip and boost, in units of the strength
TAU = 8.0               # frames: decay of the re-strike boost
SPAN = int(4 * TAU) + 1
PARTIALS = 8


@cache
def harmonic_bins(pitch: int) -> tuple[int, ...]:
    """Mel bins of a MIDI pitch's first 8 partials below 7.8 kHz, each with its two neighbours."""
    fb = mel_filters().numpy()                                      # (513, 128)
    f0 = 440.0 * 2 ** ((pitch - 69) / 12)
    out: set[int] = set()
    for h in range(1, PARTIALS + 1):
        if f0 * h > 7800:
            break
        c = int(fb[round(f0 * h / SAMPLE_RATE * N_FFT)].argmax())
        out.update(range(max(c - 1, 0), min(c + 2, N_MELS)))
    return tuple(sorted(out))


@dataclass(frozen=True)
class Attack:
    frame: int              # onset frame (50 frames/s, time 0 = frame 0)
    bins: tuple[int, ...]   # harmonic bins of the note
    velocity: int
    restrike: bool


def attack_plan(notes: list[Note]) -> list[Attack]:
    """The attacks of the (pitched) notes, in onset order. A note is re-struck when a note of its pitch
    and program with an earlier onset sounds until RESTRIKE_GAP before its onset or later."""
    out = []
    for _, same in groupby(sorted((n for n in notes if not n.is_drum), key=lambda n: (n.program, n.pitch, n.onset)),
                       lambda n: (n.program, n.pitch)):
        latest = -np.inf                                                # latest offset of earlier onsets
        for onset, chord in groupby(same, lambda n: n.onset):
            chord = list(chord)
            for n in chord:
                out.append(Attack(round(onset * FRAMES_PER_SECOND), harmonic_bins(n.pitch), n.velocity,
                                  latest >= onset - RESTRIKE_GAP))
            latest = max(latest, *(n.offset for n in chord))
    return sorted(out, key=lambda a: a.frame)


def shape_attacks(mel: torch.Tensor, plan: list[Attack], start: int, strength: float) -> torch.Tensor:
    """mel (128, n): frames start .. start + n - 1 of the generated music; returns the shaped copy."""
    n = mel.shape[-1]
    if strength <= 0 or not plan or n == 0:
        return mel
    add = np.zeros((N_MELS, n), np.float32)
    dip = np.zeros((N_MELS, n), np.float32)
    decay = np.exp(-np.arange(SPAN) / TAU).astype(np.float32)
    first = bisect_left(plan, start - SPAN + 1, key=lambda a: a.frame)
    for a in plan[first:]:
        f = a.frame - start                                          # block-relative onset frame
        if f >= n + 1:
            break
        if 0 <= f < n:
            add[:, f] = np.maximum(add[:, f], strength)
        if not a.restrike:
            continue
        lo, hi = max(f, 0), min(f + SPAN, n)
        if lo < hi:
            rows = np.array(a.bins)[:, None]
            boost = RESTRIKE * strength * a.velocity / 100 * decay[lo - f: hi - f]
            add[rows, np.arange(lo, hi)] = np.maximum(add[rows, np.arange(lo, hi)], boost)
        if 0 <= f - 1 < n:
            dip[list(a.bins), f - 1] = RESTRIKE * strength
    live = (mel > LIVE).cpu().numpy()
    out = mel.cpu().numpy() + add * live - dip
    return torch.from_numpy(np.clip(out, -1, 1)).to(mel.device, mel.dtype)
