"""Note-timed attack shaping (audio/attacks.py): its closed form on a flat mel, the harmonic bins against
the codec's own mel of real sines, block-by-block shaping equal to shaping the whole, and the pipeline
applying it to its output but not to the context it conditions on."""

import itertools

import numpy as np
import pytest
import torch
from polydiff.audio.attacks import RESTRIKE, attack_plan, harmonic_bins, shape_attacks
from polydiff.audio.codec import N_MELS, audio_to_mel
from polydiff.audio.notes import Note
from polydiff.audio.pipeline import Sampling

pytestmark = pytest.mark.usefixtures("one_thread")


def test_harmonic_bins_hold_the_loudest_mel_bin_of_each_partial():
    t = np.arange(16000) / 16000
    for pitch in (45, 69, 81):
        f0 = 440.0 * 2 ** ((pitch - 69) / 12)
        for h in (1, 2, 3):
            mel = audio_to_mel(torch.from_numpy((0.1 * np.sin(2 * np.pi * f0 * h * t)).astype(np.float32)))
            assert int(mel[:, 25].argmax()) in harmonic_bins(pitch), (pitch, h)
    assert harmonic_bins(69) != harmonic_bins(70)


def test_shaping_of_a_flat_mel_is_its_closed_form():
    s = 0.1
    notes = [Note(0.5, 1.0, 60, 100), Note(1.0, 1.5, 60, 60),            # 60 struck again at frame 50
             Note(1.0, 1.5, 67, 80), Note(0.2, 0.3, 36, 120, is_drum=True)]
    mel = torch.full((N_MELS, 120), -0.5)
    mel[100:] = -1.0                                                        # silent bins stay silent
    out = shape_attacks(mel, attack_plan(notes), 0, s)
    want = mel.clone()
    want[:100, 25] += s                                                     # accents on sounding bins,
    want[:100, 50] += s * 0.8                                               # by velocity (the louder note)
    for i in harmonic_bins(60):                                             # the re-strike's gap
        want[i, 49] -= RESTRIKE * s
    torch.testing.assert_close(out, want.clamp(-1, 1))
    assert torch.equal(shape_attacks(mel, attack_plan(notes), 0, 0.0), mel)


def test_block_by_block_shaping_equals_shaping_the_whole():
    rng = np.random.default_rng(0)
    notes = [Note(float(on), float(on) + 0.3, int(p), int(v)) for on, p, v in
             zip(np.sort(rng.uniform(0, 5, 40)).round(2), rng.integers(40, 80, 40), rng.integers(30, 127, 40))]
    notes += [Note(n.offset, n.offset + 0.2, n.pitch, 90) for n in notes[:10]]      # re-strikes
    plan = attack_plan(notes)
    assert sum(a.restrike for a in plan) >= 10
    mel = torch.from_numpy(rng.uniform(-1, 1, (N_MELS, 260)).astype(np.float32))
    whole = shape_attacks(mel, plan, 0, 0.1)
    cuts = [0, 1, 37, 38, 120, 201, 260]
    parts = [shape_attacks(mel[:, a:b], plan, a, 0.1) for a, b in itertools.pairwise(cuts)]
    torch.testing.assert_close(torch.cat(parts, -1), whole)
    assert not torch.equal(whole, mel)


def test_pipeline_shapes_its_output_but_conditions_on_the_unshaped_mel(monkeypatch):
    """With a stand-in sampler whose window is a function of its context, later windows would differ from
    the unshaped run by more than the shaping of their own frames if shaped frames were fed back."""
    import polydiff.audio.pipeline as pl

    monkeypatch.setattr(pl, "sample_segment", lambda model, tok, ctx, *a, **k: 0.5 * ctx.roll(3, -1) + 0.3)
    model = torch.nn.Linear(1, 1)
    model.max_tokens = 64
    notes = [Note(0.3 * i, 0.3 * i + 0.3, 60 if i % 4 < 2 else 64, 90) for i in range(40)]   # re-strikes
    plain = torch.cat(list(pl.windows(model, notes, torch.zeros(N_MELS, 0), 600, Sampling(attack=0.0), None)), -1)
    shaped = torch.cat(list(pl.windows(model, notes, torch.zeros(N_MELS, 0), 600, Sampling(attack=0.1), None)), -1)
    assert sum(a.restrike for a in attack_plan(notes)) == 20 and not torch.equal(shaped, plain)
    torch.testing.assert_close(shaped, shape_attacks(plain, attack_plan(notes), 0, 0.1))
    with pytest.raises(ValueError, match="attack"):
        Sampling(attack=0.5).check()


def test_restrikes_match_their_definition_note_by_note():
    """attack_plan's sweep against the definition read literally (every pair of notes)."""
    from polydiff.audio.attacks import RESTRIKE_GAP

    rng = np.random.default_rng(1)
    notes = [Note(float(o), float(o) + float(d), int(p), 80, int(g)) for o, d, p, g in
             zip(rng.uniform(0, 30, 300).round(2), rng.uniform(0.05, 1, 300), rng.integers(60, 64, 300),
                 rng.integers(0, 2, 300))]
    want = sorted((round(n.onset * 50), any(m.pitch == n.pitch and m.program == n.program and m.onset < n.onset
                                            and m.offset >= n.onset - RESTRIKE_GAP for m in notes)) for n in notes)
    assert sorted((a.frame, a.restrike) for a in attack_plan(notes)) == want
    assert 50 < sum(r for _, r in want) < 250
