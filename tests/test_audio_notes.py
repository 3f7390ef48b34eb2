"""Note tokens: vocabulary layout, MIDI -> tokens -> MIDI round trips, ties, drums, bad files."""

import numpy as np
import pytest
from polydiff.audio.notes import (
    STEP_SECONDS,
    VOCAB,
    MidiError,
    Note,
    Vocab,
    decode_segments,
    encode_segments,
    read_midi,
    write_midi,
)


def test_vocab_ranges_tile_the_id_space():
    v = Vocab(segment_steps=512, velocity_bins=8)
    ranges = [(0, 3), (v.time_offset, 513), (v.program_offset, 128), (v.velocity_offset, 9),
              (v.pitch_offset, 128), (v.drum_offset, 128)]
    ids = [i for lo, n in ranges for i in range(lo, lo + n)]
    assert ids == list(range(v.size))                       # contiguous, no overlap, no gap
    assert v.size == 3 + 513 + 128 + 9 + 128 + 128 == 909
    assert v.describe(v.pitch_offset + 60) == "pitch 60"
    assert v.describe(v.time_offset + 512) == "time 512"
    # every velocity maps to a bin whose centre is within half a bin width
    for vel in range(1, 128):
        b = v.velocity_to_bin(vel)
        assert 1 <= b <= 8 and abs(v.bin_to_velocity(b) - vel) <= 127 / 16 + 0.5


def random_notes(rng, n=60, seconds=14.0):
    notes = []
    used = {}
    for _ in range(n):
        prog = int(rng.choice([0, 40, 73]))
        pitch = int(rng.integers(40, 90))
        on = float(rng.uniform(0, seconds))
        off = on + float(rng.uniform(0.005, 3.0))            # some shorter than one step, some cross joins
        # no overlapping notes of the same pitch on the same program (MIDI cannot represent them either)
        if any(not (off <= a or on >= b) for a, b in used.get((prog, pitch), [])):
            continue
        used.setdefault((prog, pitch), []).append((on - 0.02, off + 0.02))
        notes.append(Note(on, off, pitch, int(rng.integers(1, 128)), prog, False))
    for _ in range(15):
        on = float(rng.uniform(0, seconds))
        notes.append(Note(on, on + 0.05, int(rng.choice([36, 38, 42])), int(rng.integers(1, 128)), 0, True))
    return notes


def match(a: Note, b: Note, vocab=VOCAB):
    step = STEP_SECONDS
    ok = (a.pitch == b.pitch and a.is_drum == b.is_drum and abs(a.onset - b.onset) <= step / 2 + 1e-9
          and abs(vocab.bin_to_velocity(vocab.velocity_to_bin(a.velocity)) - b.velocity) == 0)
    if not a.is_drum:
        ok = ok and a.program == b.program and abs(max(a.offset, a.onset + step) - b.offset) <= step / 2 + 1e-9
    return ok


def test_round_trip_keeps_notes_within_one_step_across_segments():
    rng = np.random.default_rng(0)
    notes = random_notes(rng)
    segs = encode_segments(notes)
    assert len(segs) == 4                                    # 14 s + tails < 20.48 s
    assert all(s[-1] == VOCAB.eos and s.count(VOCAB.tie) == 1 for s in segs)
    back = decode_segments(segs)
    key = lambda n: (n.is_drum, n.program, n.pitch, round(n.onset / STEP_SECONDS))
    assert len(back) == len(notes)
    for a, b in zip(sorted(notes, key=key), sorted(back, key=key)):
        assert match(a, b), (a, b)


def test_ties_list_exactly_the_notes_sounding_at_each_join():
    L = VOCAB.segment_steps * STEP_SECONDS                  # 5.12 s
    notes = [Note(1.0, 12.0, 60, 100, 40),                   # crosses two joins
             Note(4.0, L, 64, 100, 40),                      # ends exactly at the join: no tie
             Note(5.0, 6.0, 67, 100, 0),                     # crosses one join, other program
             Note(L, 7.0, 72, 100, 0)]                       # starts exactly at the join: no tie
    segs = encode_segments(notes)
    ties = [s[:s.index(VOCAB.tie)] for s in segs]
    P, K = VOCAB.program_offset, VOCAB.pitch_offset
    assert ties[0] == []
    assert ties[1] == [P + 0, K + 67, P + 40, K + 60]
    assert ties[2] == [P + 40, K + 60]
    back = decode_segments(segs)
    assert sorted((n.pitch, n.onset, n.offset) for n in back) == sorted(
        (n.pitch, n.onset, n.offset) for n in notes)
    # a segment decoded alone starts its tied notes at its own start
    alone = decode_segments([segs[2]])
    assert [(n.pitch, n.onset, n.offset) for n in alone] == [(60, 0.0, pytest.approx(12.0 - 2 * L))]


def test_drums_are_onsets_with_velocity():
    notes = [Note(0.5, 5.5, 36, 120, 0, True), Note(0.5, 0.9, 60, 30, 0), Note(6.0, 6.1, 38, 20, 0, True)]
    segs = encode_segments(notes)
    D = VOCAB.drum_offset
    assert D + 36 in segs[0] and D + 38 in segs[1]
    assert segs[1][0] == VOCAB.tie                          # drums never tie, even when long
    back = decode_segments(segs)
    drums = [n for n in back if n.is_drum]
    assert [(n.pitch, n.onset) for n in drums] == [(36, 0.5), (38, 6.0)]
    assert [VOCAB.velocity_to_bin(n.velocity) for n in drums] == [VOCAB.velocity_to_bin(120),
                                                                   VOCAB.velocity_to_bin(20)]


def test_midi_file_round_trip(tmp_path):
    notes = [Note(0.0, 0.5, 60, 80, 0), Note(0.25, 1.0, 67, 40, 56), Note(0.5, 0.55, 42, 90, 0, True)]
    path = tmp_path / "x.mid"
    write_midi(notes, path)
    back = read_midi(path)
    assert [(n.pitch, n.program, n.is_drum, n.velocity) for n in back] == [
        (60, 0, False, 80), (67, 56, False, 40), (42, 0, True, 90)]
    assert all(abs(a.onset - b.onset) < 2e-3 and abs(a.offset - b.offset) < 2e-3 for a, b in zip(notes, back))


@pytest.mark.parametrize("content,needle", [(b"", "empty"), (b"hello, I am text\n" * 5, "not a readable"),
                                            (None, "no notes"), ("missing", "no such")])
def test_bad_midi_files_raise_one_clear_error(tmp_path, content, needle):
    path = tmp_path / "bad.mid"
    if content is None:
        import pretty_midi
        pretty_midi.PrettyMIDI().write(str(path))            # valid MIDI, no notes
    elif content != "missing":
        path.write_bytes(content)
    with pytest.raises(MidiError, match=needle) as err:
        read_midi(path)
    assert "bad.mid" in str(err.value)


def test_same_key_overlaps_resolve_like_a_midi_channel():
    from polydiff.audio.notes import resolve_overlaps

    notes = [Note(0.0, 1.0, 60, 90, 0), Note(0.5, 1.5, 60, 50, 0),       # re-struck while sounding
             Note(2.0, 2.2, 62, 90, 0), Note(2.0, 2.8, 62, 70, 0),       # unison onset: longer kept
             Note(0.2, 0.9, 60, 90, 40)]                                 # other program: untouched
    fixed = resolve_overlaps(notes)
    assert sorted((n.onset, n.offset, n.pitch, n.program) for n in fixed) == [
        (0.0, 0.5, 60, 0), (0.2, 0.9, 60, 40), (0.5, 1.5, 60, 0), (2.0, 2.8, 62, 0)]
    back = decode_segments(encode_segments(notes))
    r = lambda ns: sorted((round(n.onset, 6), round(n.offset, 6), n.pitch, n.program) for n in ns)
    assert r(back) == r(fixed)


def test_window_tokens_equal_segments_on_the_grid_and_tie_notes_off_it():
    from polydiff.audio.notes import SEGMENT_STEPS, window_tokens

    notes = [Note(0.0, 1.0, 60, 100), Note(0.9, 6.0, 64, 80, 40), Note(5.5, 5.6, 38, 90, 0, True),
             Note(7.0, 11.0, 67, 70)]
    segs = encode_segments(notes)
    for k, seg in enumerate(segs):
        assert window_tokens(notes, k * SEGMENT_STEPS) == seg
    # a window from 0.5 s: the first two notes sound into it (ties), the rest keep their times
    back = decode_segments([window_tokens(notes, 50)])
    assert [(n.pitch, round(n.onset, 2), round(n.offset, 2)) for n in back if not n.is_drum] == \
        [(60, 0.0, 0.5), (64, 0.4, 5.12)]
    # a window before time 0 (a continuation's overlap): notes start where time 0 falls in it
    early = decode_segments([window_tokens(notes, -16)])
    assert round(early[0].onset, 2) == 0.16 and early[0].pitch == 60


def test_held_over_keeps_notes_begun_before_the_join_with_negative_onsets():
    from polydiff.audio.notes import held_over

    notes = [Note(1.0, 3.0, 60, 90, 40), Note(2.0, 2.505, 62, 80), Note(4.0, 6.0, 64, 70, 0, True),
             Note(5.5, 6.0, 65, 60)]
    assert held_over(notes, 2.5, 5.0) == [Note(-1.5, 0.5, 60, 90, 40), Note(1.5, 2.5, 64, 70, 0, True)]
    assert held_over(notes, 2.5)[-1] == Note(3.0, 3.5, 65, 60)
