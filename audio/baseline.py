"""The trivial baseline: an additive sine synth of the notes (what any model must beat).

Each pitched note is 8 harmonics with amplitudes 1/k (up to 7.9 kHz) under an attack-decay-release
envelope; level follows velocity as (velocity / 127)^2 (about 40 dB over the MIDI range, like most GM
synths); a drum is a 60 ms decaying noise burst. The mix is peak-normalised like the corpus renders.
"""

from __future__ import annotations

import numpy as np

from .codec import SAMPLE_RATE
from .corpus import PEAK
from .notes import Note

ATTACK, RELEASE, DECAY = 0.01, 0.05, 0.6       # seconds (DECAY: exponential time constant)


def sine_synth(notes: list[Note], seconds: float | None = None, seed: int = 0) -> np.ndarray:
    """(n,) float32 audio at 16 kHz; `seconds` defaults to the last note's end plus the release."""
    end = max((n.offset for n in notes), default=0.0) + RELEASE if seconds is None else seconds
    out = np.zeros(round(end * SAMPLE_RATE), np.float64)
    rng = np.random.default_rng(seed)
    for n in notes:
        s = round(n.onset * SAMPLE_RATE)
        if s >= len(out):
            continue
        gain = (n.velocity / 127) ** 2
        if n.is_drum:
            t = np.arange(int(0.06 * SAMPLE_RATE)) / SAMPLE_RATE
            sound = rng.standard_normal(len(t)) * np.exp(-t / 0.015) * 0.5 * gain
        else:
            dur = max(n.offset - n.onset, 0.02)
            t = np.arange(int((dur + RELEASE) * SAMPLE_RATE)) / SAMPLE_RATE
            f0 = 440.0 * 2 ** ((n.pitch - 69) / 12)
            k = np.arange(1, 9)
            k = k[k * f0 < 7900]
            wave = (np.sin(2 * np.pi * f0 * np.outer(k, t)) / k[:, None]).sum(0)
            env = np.minimum(t / ATTACK, 1) * np.exp(-t / DECAY)
            env *= np.clip((dur + RELEASE - t) / RELEASE, 0, 1)              # release after the offset
            sound = wave * env * gain
        e = min(len(out), s + len(sound))
        out[s:e] += sound[: e - s]
    peak = np.abs(out).max()
    return (out * (PEAK / peak) if peak > 0 else out).astype(np.float32)
