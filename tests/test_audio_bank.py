"""The note bank (audio/bank.py): a note drawn from it against FluidSynth's render of that very note (the
ground truth), the closed forms of velocity, level offset, ties and drums, that notes of programs
without a row are drawn by the parametric renderer exactly as before, and that a model keeps its bank
through a checkpoint."""

import numpy as np
import pytest
import torch
from polydiff.audio.bank import (
    BANK_FRAMES,
    DRUMS,
    HIGH,
    LOW,
    PRE,
    _render,
    build_bank,
    empty_bank,
    fit_offset,
)
from polydiff.audio.codec import DB_MAX, DB_MIN, SEGMENT_FRAMES, audio_to_mel, unit_to_db
from polydiff.audio.corpus import require_fluidsynth
from polydiff.audio.notes import Note, encode_segments, pad_tokens
from polydiff.audio.timbre import TIED_FRAMES, Timbre

pytestmark = pytest.mark.usefixtures("one_thread")

FLUTE, VIOLIN = 73, 40


@pytest.fixture(scope="module")
def small_bank():
    """A bank of flute, violin and drums at a few pitches, in the shipped layout (other rows empty)."""
    require_fluidsynth()
    built = build_bank([FLUTE, VIOLIN, DRUMS], pitches=[38, 42, 62, 64, 69], show_progress=False)
    bank = empty_bank()
    for k in ("u", "v", "gamma", "programs"):
        bank[k][:3] = built[k]
    return bank


def renderer(bank, offset=0.0):
    tim = Timbre(subframe=True, bank=True)
    tim.set_bank({**bank, "offset": torch.tensor(offset)})
    return tim


def drawn_db(tim, notes, frames=SEGMENT_FRAMES):
    rows = [[(n.onset * 50, n.offset * 50, n.pitch, n.velocity, n.program, n.is_drum, False) for n in notes]]
    tim.frames = frames
    with torch.no_grad():
        return 20 * torch.log10(tim.linear(rows)[0].clamp_min(1e-10)).clamp(min=DB_MIN)


def rendered_db(notes, frames=SEGMENT_FRAMES):
    ref = unit_to_db(audio_to_mel(torch.from_numpy(_render(notes, None))))[:, :frames]
    return torch.nn.functional.pad(ref, (0, frames - ref.shape[1]), value=DB_MIN)


@pytest.mark.parametrize("notes", [
    [Note(0.73, 1.83, 64, 80, FLUTE)],                                   # short: its release is drawn
    [Note(0.5, 4.9, 62, 110, VIOLIN), Note(1.21, 1.5, 69, 60, FLUTE)],  # held past the bank's 3 s, and a chord
    [Note(0.5, 0.7, 38, 100, 0, True), Note(1.5, 1.7, 42, 70, 0, True)],  # drums
])
def test_a_bank_note_is_what_fluidsynth_plays(small_bank, notes):
    """Drawn at another onset (off the frame grid), velocity and length than the bank's note, the mel is
    within 5 dB of FluidSynth's render of the same notes on average over the cells louder than 30 dB
    above the floor, and a third or less of the error of the parametric renderer's shared start."""
    ref = rendered_db(notes)
    loud = ref > DB_MIN + 30
    err = (drawn_db(renderer(small_bank), notes) - ref).abs()[loud].mean()
    base = (drawn_db(Timbre(subframe=True), notes) - ref).abs()[loud].mean()
    assert loud.sum() > 200
    assert err < 5.0 and err < base / 3, (float(err), float(base))


def test_velocity_offset_and_ties_follow_their_closed_forms(small_bank):
    tim = renderer(small_bank)
    gamma = float(small_bank["gamma"][0])
    loud = drawn_db(tim, [Note(0.5, 2.0, 64, 100, FLUTE)])
    soft = drawn_db(tim, [Note(0.5, 2.0, 64, 50, FLUTE)])
    on = loud > DB_MIN + 40
    torch.testing.assert_close(soft[on], loud[on] + 20 * gamma * np.log10(0.5), atol=1e-3, rtol=0)
    louder = drawn_db(renderer(small_bank, offset=6.0), [Note(0.5, 2.0, 64, 100, FLUTE)])
    torch.testing.assert_close(louder[on], loud[on] + 6.0, atol=1e-3, rtol=0)
    # nothing before onset - PRE frames; a tied note is the same note TIED_FRAMES on
    first = int(on.any(0).float().argmax())
    assert 25 - PRE < first <= 25 and not (loud[:, : 25 - PRE] > DB_MIN).any()
    rows = lambda tied: [[(0.0, 60.0, 64, 100, FLUTE, False, tied)]]
    tim.frames = SEGMENT_FRAMES
    with torch.no_grad():
        tied = tim.linear(rows(True))[0]
        early = Timbre(subframe=True, bank=True, frames=SEGMENT_FRAMES + TIED_FRAMES)
        early.load_state_dict(tim.state_dict())
        whole = early.linear([[(0.0, 60.0 + TIED_FRAMES, 64, 100, FLUTE, False, False)]])[0]
    torch.testing.assert_close(tied, whole[:, TIED_FRAMES:], atol=1e-6, rtol=1e-4)


def test_drums_ignore_the_offset_and_unknown_programs_are_drawn_as_before(small_bank):
    tim = renderer(small_bank)
    short = drawn_db(tim, [Note(0.5, 0.52, 38, 100, 0, True)])
    long = drawn_db(tim, [Note(0.5, 3.0, 38, 100, 0, True)])
    torch.testing.assert_close(short, long)
    assert (short[:, 25 + BANK_FRAMES - PRE:] <= DB_MIN).all()       # the drum's frames end
    plain = Timbre(subframe=True)
    plain.load_state_dict(tim.state_dict(), strict=False)
    other = [Note(0.3, 1.2, 60, 90, 11), Note(0.4, 1.5, 67, 70, 24),  # no bank row: parametric
             Note(0.2, 1.0, HIGH + 2, 90, FLUTE)]                      # ... and a pitch above the bank's
    torch.testing.assert_close(drawn_db(tim, other), drawn_db(plain, other))
    mixed = drawn_db(tim, other + [Note(0.5, 2.0, 64, 100, FLUTE)])
    assert (mixed - drawn_db(tim, other)).abs().max() > 10        # the bank note is there


def test_fit_offset_finds_a_known_gain_and_the_bank_keeps_its_shape(small_bank):
    tim = renderer(small_bank)
    notes = [Note(0.2 + 0.4 * i, 0.5 + 0.4 * i, 62 + (i % 3) * 2, 90, FLUTE) for i in range(10)]
    tok = torch.from_numpy(pad_tokens(encode_segments(notes, 1), 128)[0].astype(np.int64))
    with torch.no_grad():
        target = tim(tok)[0]
    quieter = renderer(small_bank, offset=-7.5)
    data = [(target, tok[0], torch.full_like(target, -1.0))]
    assert fit_offset(quieter, data, n=4) == pytest.approx(0.0, abs=0.05)      # its own offset is ignored
    four_db = 4.0 / (DB_MAX - DB_MIN) * 2                                       # 4 dB on the [-1, 1] scale
    shifted = [(torch.clamp(target + four_db, -1, 1), tok[0], data[0][2])]
    assert fit_offset(tim, shifted, n=4) == pytest.approx(4.0, abs=0.1)
    with pytest.raises(ValueError, match="shape"):
        tim.set_bank({"u": torch.zeros(2, HIGH - LOW, 128, 6)})
    with pytest.raises(ValueError, match="without a note bank"):
        Timbre().set_bank(small_bank)


def test_a_model_keeps_its_bank_through_a_checkpoint(small_bank, tmp_path):
    from polydiff.audio.model import AudioDiffusion
    from polydiff.audio.pipeline import load_model
    from polydiff.core.checkpoint import save_pretrained

    model = AudioDiffusion(channels=16, channel_mult=[1, 2], heads=2, cond_dim=32, context_stride=16,
                           max_tokens=64, timbre=True, timbre_bank=True, timbre_subframe=True)
    model.timbre.set_bank({**small_bank, "offset": torch.tensor(3.0)})
    save_pretrained(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    for k, v in model.timbre.state_dict().items():
        torch.testing.assert_close(loaded.timbre.state_dict()[k], v)
    with pytest.raises(ValueError, match="set timbre"):
        AudioDiffusion(timbre_bank=True)
