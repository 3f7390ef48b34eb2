"""Metrics against ground truth and the sine baseline: identities, bounds and closed forms."""

import math

import numpy as np
import pytest
from polydiff.audio.baseline import sine_synth
from polydiff.audio.codec import SAMPLE_RATE
from polydiff.audio.metrics import (
    all_metrics,
    chroma_cosine,
    note_onset_f1,
    onset_f1,
    seam_ratio,
    velocity_loudness_correlation,
)
from polydiff.audio.notes import Note


pytestmark = pytest.mark.usefixtures("one_thread")


def melody(n=16, gap=0.25, seed=0):
    rng = np.random.default_rng(seed)
    return [Note(0.1 + i * gap, 0.1 + i * gap + 0.2, int(rng.integers(55, 80)), int(rng.integers(20, 128)))
            for i in range(n)]


def test_identical_audio_scores_perfectly():
    notes = melody()
    audio = sine_synth(notes)
    m = all_metrics(audio, audio, notes)
    assert m["onset_f1"] == 1.0
    assert m["chroma_cos"] == pytest.approx(1.0, abs=1e-6)
    assert m["mel_l1"] == 0 and m["lsd_db"] == 0 and m["mr_stft"] == 0
    assert note_onset_f1(audio, notes) > 0.9                  # detected onsets sit on the notes (50 ms)


def test_chroma_and_onsets_tell_different_music_apart():
    notes = melody()
    up = [Note(n.onset, n.offset, n.pitch + 6, n.velocity) for n in notes]            # a tritone away
    late = [Note(n.onset + 0.12, n.offset + 0.12, n.pitch, n.velocity) for n in notes]  # 120 ms late
    audio = sine_synth(notes, seconds=4.5)
    assert chroma_cosine(sine_synth(up, seconds=4.5), audio) < 0.6
    assert onset_f1(sine_synth(late, seconds=4.5), audio) < 0.2
    assert onset_f1(sine_synth(up, seconds=4.5), audio) > 0.9  # same rhythm


def test_sine_baseline_pitch_and_velocity_law():
    audio = sine_synth([Note(0.0, 1.0, 69, 127), Note(1.2, 2.2, 69, 64)])
    assert len(audio) == round((2.2 + 0.05) * SAMPLE_RATE) and np.abs(audio).max() == pytest.approx(0.9)
    a, b = audio[1600:8000], audio[int(1.3 * SAMPLE_RATE): int(1.3 * SAMPLE_RATE) + 6400]
    spec = np.abs(np.fft.rfft(a))
    assert np.fft.rfftfreq(len(a), 1 / SAMPLE_RATE)[spec.argmax()] == pytest.approx(440, abs=2.5)
    level = 20 * np.log10(np.sqrt(np.mean(a ** 2)) / np.sqrt(np.mean(b ** 2)))
    assert level == pytest.approx(40 * math.log10(127 / 64), abs=0.1)      # (velocity / 127)^2


def test_velocity_loudness_correlation():
    notes = melody(24)
    assert velocity_loudness_correlation(sine_synth(notes), notes) > 0.9
    flat = [Note(n.onset, n.offset, n.pitch, 90) for n in notes]
    assert math.isnan(velocity_loudness_correlation(sine_synth(flat), flat))


def stationary(seconds, seed=0):
    # a chord with slow vibrato and noise: statistically the same everywhere
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    x = sum(np.sin(2 * np.pi * f * t + 3 * np.sin(2 * np.pi * 0.5 * t)) for f in (220, 277, 330, 440))
    return (0.1 * x + 0.02 * np.random.default_rng(seed).standard_normal(len(t))).astype(np.float32)


def test_seam_ratio_flags_injected_discontinuities_only():
    seams = [1.28 * k for k in range(1, 8)]
    smooth = stationary(10.24)
    assert seam_ratio(smooth, seams) < 1.2
    broken = smooth.copy()
    for k, s in enumerate(seams):
        i = int(s * SAMPLE_RATE)
        broken[i:] = np.roll(broken[i:], 37) * (0.5 if k % 2 == 0 else 2.0)           # phase + level jump
    assert seam_ratio(broken, seams) > 1.2
    # the statistic compares like with like: seams placed anywhere in the smooth signal score ~1
    assert seam_ratio(smooth, [s + 0.37 for s in seams]) < 1.2
