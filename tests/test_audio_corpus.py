"""The corpus builder on two tiny pieces, the aligned-folder loader, the dataset and the CLI.

Ground truth here is FluidSynth itself: the cached mel must be the mel of the render of the cached
notes, and the cached tokens must decode to those notes."""

import json
import math
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from polydiff.audio.codec import SEGMENT_FRAMES, audio_to_mel, load_audio
from polydiff.audio.corpus import (
    SOUNDFONT,
    AudioSegments,
    CorpusError,
    arrange,
    build_data,
    build_from_folder,
    corpus_piece_ids,
    find_aligned_pairs,
    render_midi,
    split_of,
)
from polydiff.audio.metrics import note_onset_f1
from polydiff.audio.notes import STEP_SECONDS, Note, decode_segments, read_midi, write_midi
from polydiff.audio.plugin import cli

needs_fluidsynth = pytest.mark.skipif(
    shutil.which("fluidsynth") is None or not SOUNDFONT.is_file(),
    reason="FluidSynth / FluidR3_GM not installed (apt-get install -y fluidsynth fluid-soundfont-gm)")

TRAIN, TEST = "bach/bwv251.mxl", "bach/bwv432.mxl"      # a train and a test chorale (hash split)


pytestmark = pytest.mark.usefixtures("one_thread")


def same_notes(a, b):
    key = lambda n: (n.program, n.pitch, round(n.onset / STEP_SECONDS))
    a, b = sorted(a, key=key), sorted(b, key=key)
    return len(a) == len(b) and all(
        x.pitch == y.pitch and x.program == y.program and abs(x.onset - y.onset) <= STEP_SECONDS / 2 + 1e-6
        and abs(max(x.offset, round(x.onset / STEP_SECONDS + 1) * STEP_SECONDS) - y.offset) <= STEP_SECONDS / 2 + 1e-6
        for x, y in zip(a, b))


def test_splits_are_by_piece_and_about_90_5_5():
    ids = corpus_piece_ids()
    assert len(ids) > 2500 and len(set(ids)) == len(ids)
    frac = {s: sum(split_of(i) == s for i in ids) / len(ids) for s in ("train", "val", "test")}
    assert 0.03 < frac["test"] < 0.07 and 0.03 < frac["val"] < 0.07
    assert split_of(TRAIN) == "train" and split_of(TEST) == "test"


def test_arrangement_is_deterministic_and_in_range():
    parts = [[Note(i * 0.5, i * 0.5 + 0.5, 60 + p * 5 + i % 3, 90) for i in range(8)] for p in range(4)]
    a, arr_a = arrange(parts, np.random.default_rng([7, 1]), max_seconds=3.0)
    b, arr_b = arrange(parts, np.random.default_rng([7, 1]), max_seconds=3.0)
    assert a == b and arr_a == arr_b
    assert 0.8 <= arr_a.tempo_factor <= 1.25 and -5 <= arr_a.transpose <= 6
    assert all(n.onset < 3.0 and n.offset <= 3.0 and 1 <= n.velocity <= 127 for n in a)
    assert {n.pitch - arr_a.transpose for n in a} <= {n.pitch for p in parts for n in p}
    assert len({n.velocity for n in a}) > 5                  # dynamics were added to constant velocities
    others = {tuple(arrange(parts, np.random.default_rng([s, 1]))[1].programs) for s in range(8)}
    assert len(others) > 2                                   # programs vary with the seed


@needs_fluidsynth
def test_build_two_tiny_pieces(tmp_path):
    out = tmp_path / "corpus"
    index = build_data(out, piece_ids=[TRAIN, TEST], seed=0, max_seconds=6.0)
    assert index["failed"] == [] and sorted(p["id"] for p in index["pieces"]) == sorted([TRAIN, TEST])
    for p in index["pieces"]:
        key = out / "pieces" / p["key"]
        with np.load(f"{key}.npz") as z:
            mel, tokens = z["mel"], z["tokens"]
        notes = read_midi(f"{key}.mid")
        assert p["split"] == split_of(p["id"]) and len(set(p["programs"])) >= 1
        assert mel.shape == (p["n_segments"], 128, SEGMENT_FRAMES) and tokens.shape == (p["n_segments"], 1024)
        assert p["truncated_segments"] == 0
        assert p["n_segments"] == math.ceil(p["seconds"] * 50 / SEGMENT_FRAMES)
        assert max(n.onset for n in notes) < 6.0
        assert same_notes(decode_segments(tokens.tolist()), notes)            # tokens <-> the rendered notes
        audio = render_midi(f"{key}.mid")
        ref = audio_to_mel(audio).numpy()
        assert np.abs(mel.transpose(1, 0, 2).reshape(128, -1)[:, : ref.shape[1]] - ref).max() < 2e-3
        assert (f"{key}.flac" in [str(x) for x in key.parent.glob("*.flac")]) == (p["split"] != "train")
    test = next(p for p in index["pieces"] if p["split"] == "test")
    stored = load_audio(out / "pieces" / f"{test['key']}.flac")
    assert np.abs(stored - render_midi(out / "pieces" / f"{test['key']}.mid")).max() < 1e-4  # 16-bit FLAC

    # resumable: nothing is redone; another seed into the same folder is refused
    before = {f.name: f.stat().st_mtime_ns for f in (out / "pieces").iterdir()}
    assert build_data(out, piece_ids=[TRAIN, TEST], seed=0, max_seconds=6.0) == index
    assert {f.name: f.stat().st_mtime_ns for f in (out / "pieces").iterdir()} == before
    with pytest.raises(CorpusError, match="seed"):
        build_data(out, piece_ids=[TRAIN], seed=1, max_seconds=6.0)

    ds = AudioSegments(out, "train")
    n = next(p["n_segments"] for p in index["pieces"] if p["split"] == "train")
    assert len(ds) == n >= 2
    mel0, tok0, ctx0 = ds[0]
    _, _, ctx1 = ds[1]
    assert torch.all(ctx0 == -1) and torch.equal(ctx1, mel0) and tok0.dtype == torch.int64
    assert mel0.shape == (128, 256) and -1 <= mel0.min() and mel0.max() <= 1
    short = AudioSegments(out, "train", max_tokens=16)[0][1]
    assert short.shape == (16,) and torch.equal(short[:15], tok0[:15]) and short[15] == 1   # ends in EOS
    with pytest.raises(CorpusError, match="no val pieces"):
        AudioSegments(out, "val")


def piano_notes(shift=0):
    return [Note(0.2 + 0.4 * i, 0.5 + 0.4 * i, 60 + shift + (i * 5) % 12, 40 + 6 * i, 0) for i in range(14)]


@needs_fluidsynth
def test_aligned_folder_loader_and_cli(tmp_path):
    src = tmp_path / "user"
    slakh = src / "train" / "Track00001"
    slakh.mkdir(parents=True)
    write_midi(piano_notes(), slakh / "all_src.mid")
    sf.write(slakh / "mix.flac", render_midi(slakh / "all_src.mid"), 16000)
    maestro = src / "2004"
    maestro.mkdir()
    write_midi(piano_notes(3), maestro / "song.midi")
    sf.write(maestro / "song.wav", render_midi(maestro / "song.midi"), 16000)
    (maestro / "broken.mid").write_text("not midi at all\n")
    sf.write(maestro / "broken.wav", np.zeros(1600), 16000)

    pairs = find_aligned_pairs(src)
    assert [p[0] for p in pairs] == ["2004/broken.mid", "2004/song.midi", "train/Track00001"]

    # FluidSynth's render is aligned with the notes: its detected onsets sit on the note onsets
    audio = load_audio(maestro / "song.wav")
    assert note_onset_f1(audio, piano_notes(3)) > 0.85

    out = tmp_path / "cache"
    result = CliRunner().invoke(cli, ["build-data", "--from-folder", str(src), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "2 pieces (1 skipped)" in result.output
    index = json.loads((out / "index.json").read_text())
    assert {p["id"]: p["split"] for p in index["pieces"]}["train/Track00001"] == "train"
    assert "broken.mid" in index["failed"][0]["error"] and not list(out.glob("pieces/2004_broken*.npz"))
    song = next(p for p in index["pieces"] if p["id"] == "2004/song.midi")
    with np.load(out / "pieces" / f"{song['key']}.npz") as z:
        assert same_notes(decode_segments(z["tokens"].tolist()), read_midi(maestro / "song.midi"))
        ref = audio_to_mel(audio).numpy()
        assert np.abs(z["mel"].transpose(1, 0, 2).reshape(128, -1)[:, : ref.shape[1]] - ref).max() < 2e-3


def test_bad_folders_give_clear_errors_and_write_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    for folder, needle in ((tmp_path / "missing", "no such folder"), (tmp_path / "empty", "no aligned")):
        result = CliRunner().invoke(cli, ["build-data", "--from-folder", str(folder), "-o",
                                          str(tmp_path / "out")])
        assert result.exit_code == 1 and needle in result.output
        with pytest.raises(CorpusError, match=needle):
            build_from_folder(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_some_arrangements_get_a_drum_kit_on_the_beat_grid():
    parts = [[Note(i * 0.5, i * 0.5 + 0.5, 60 + p * 5, 90) for i in range(32)] for p in range(3)]
    beats, downbeats = np.arange(32) * 0.5, np.arange(8) * 2.0                   # 4/4 at 120 bpm
    with_drums = 0
    for s in range(30):
        notes, arr = arrange(parts, np.random.default_rng([s, 2]), 60.0, beats, downbeats)
        drums = [n for n in notes if n.is_drum]
        assert bool(drums) == arr.drums and not (arr.drums and arr.family in ("choir", "organ"))
        if drums:
            with_drums += 1
            grid = np.arange(64) * 0.25 / arr.tempo_factor                     # half-beat grid
            assert all(np.abs(grid - n.onset).min() < 1e-9 for n in drums)
            kicks = sorted(n.onset for n in drums if n.pitch == 36)
            assert kicks[:2] == pytest.approx([0.0, 1.0 / arr.tempo_factor])   # beats 1 and 3
            snares = sorted(n.onset for n in drums if n.pitch == 38)
            assert snares[:2] == pytest.approx([0.5 / arr.tempo_factor, 1.5 / arr.tempo_factor])
    assert 2 <= with_drums <= 15                                               # about DRUM_PROB of 30


@needs_fluidsynth
def test_scores_too_large_to_parse_quickly_are_skipped_and_recorded(tmp_path, monkeypatch):
    """A score over MAX_SCORE_BYTES of notation (.mxl counted uncompressed) is recorded as failed without
    being parsed; the others are built as usual."""
    import zipfile

    import polydiff.audio.corpus as corpus_mod
    from music21 import corpus

    with zipfile.ZipFile(str(corpus.getWork(TEST))) as z:
        size = sum(i.file_size for i in z.infolist())
    assert corpus_mod.score_bytes(TEST) == size > 10_000
    assert corpus_mod.score_bytes("beethoven/opus18no4.mxl") > corpus_mod.MAX_SCORE_BYTES   # the one that stalled
    monkeypatch.setattr(corpus_mod, "MAX_SCORE_BYTES", size - 1)
    monkeypatch.setattr(corpus_mod, "score_bytes", lambda pid: size if pid == TEST else 1)
    index = build_data(tmp_path / "c", piece_ids=[TRAIN, TEST], seed=0, max_seconds=6.0)
    assert [p["id"] for p in index["pieces"]] == [TRAIN]
    assert len(index["failed"]) == 1 and "too large" in json.dumps(index["failed"])
