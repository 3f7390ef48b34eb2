"""The (notes, audio) corpus: music21's bundled scores arranged for General MIDI and rendered by
FluidSynth, or a user's folder of aligned MIDI + audio (Slakh2100, MAESTRO), cut into segments.

Cache layout (default `.cache/audio_corpus/`, an ignored folder):

    build.json                 seed and codec / vocabulary facts the cache was built with
    index.json                 every piece's metadata (split, seconds, segments, programs, ...)
    pieces/KEY.npz             mel (n, 128, 256) float16 in [-1, 1]; tokens (n, max_tokens) int16
    pieces/KEY.json            the piece's metadata (its presence marks the piece done: resumable)
    pieces/KEY.mid             the exact notes that were rendered (ground truth)
    pieces/KEY.flac            the rendered audio (val / test pieces only, for metrics)

A segment is 5.12 s (256 frames); its context is the previous segment's mel (silence, -1, for the
first). Splits are by piece, from a hash of the piece id, so they never depend on order or seed.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .codec import (
    DB_MAX,
    DB_MIN,
    HOP,
    N_MELS,
    SAMPLE_RATE,
    SEGMENT_FRAMES,
    AudioError,
    atomic_write,
    audio_to_mel,
    load_audio,
)
from .notes import (
    VOCAB,
    MidiError,
    Note,
    encode_segments,
    n_segments,
    notes_from_pretty_midi,
    pad_tokens,
    read_midi,
    resolve_overlaps,
    write_midi,
)

log = logging.getLogger("polydiff.audio")

DEFAULT_CACHE = Path(".cache/audio_corpus")
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
FORMAT_VERSION = 1
SPLITS = {"test": 0.05, "val": 0.05}            # the rest is train
PEAK = 0.9                                       # renders are peak-normalised to this

# General MIDI programs by family, each ordered from high to low register
FAMILIES = {
    "strings": [40, 40, 41, 42, 43],             # violin, violin, viola, cello, contrabass
    "winds": [73, 68, 71, 69, 70],               # flute, oboe, clarinet, english horn, bassoon
    "brass": [56, 60, 60, 57, 58],               # trumpet, horn, horn, trombone, tuba
    "piano": [0, 0, 1, 0, 0],                    # grand / bright piano
    "guitar": [24, 25, 24, 25, 32],              # nylon, steel guitars, acoustic bass
    "organ": [19, 19, 20, 19, 19],               # church / reed organ
    "mallets": [11, 12, 13, 12, 12],             # vibraphone, marimba, xylophone
    "choir": [52, 52, 53, 52, 52],               # choir aahs, voice oohs
}
ALL_PROGRAMS = sorted({p for ps in FAMILIES.values() for p in ps} | {48, 71, 46, 21, 6})
SKIP_FOLDERS = {"demos", "theoryExercises", "leadSheet"}


class CorpusError(RuntimeError):
    """The corpus cannot be built or read (missing FluidSynth/soundfont, wrong folder, mixed seeds)."""


# -- pieces and splits --------------------------------------------------------------------------
def _hash01(text: str) -> float:
    return int(hashlib.sha1(text.encode()).hexdigest()[:12], 16) / 16**12


def split_of(piece_id: str) -> str:
    h = _hash01("split:" + piece_id)
    return "test" if h < SPLITS["test"] else "val" if h < SPLITS["test"] + SPLITS["val"] else "train"


def corpus_piece_ids() -> list[str]:
    """music21 corpus files with notes (paths relative to the corpus), in a fixed pseudo-random order
    so that the first N pieces mix composers."""
    from music21 import common, corpus

    root = Path(common.getCorpusFilePath())
    ids = []
    for p in corpus.getPaths():
        rel = Path(p).relative_to(root).as_posix()
        if Path(p).suffix == ".rntxt" or rel.split("/")[0] in SKIP_FOLDERS:
            continue
        ids.append(rel)
    return sorted(ids, key=lambda i: _hash01("order:" + i))


def piece_key(piece_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", piece_id)


# -- arranging a score ---------------------------------------------------------------------------
# music21 takes minutes on the largest scores (beethoven/opus18no4: 6.6 MB of MusicXML, over 9 minutes
# without finishing on this machine) where a typical piece (3 kB median) takes well under a second; a piece
# is cut at max_seconds anyway, so such scores are skipped (recorded as failed, like unreadable ones)
MAX_SCORE_BYTES = 1_000_000


def score_bytes(piece_id: str) -> int:
    """Size of a corpus score's notation, uncompressed (.mxl files are zip archives)."""
    import zipfile

    from music21 import corpus

    path = str(corpus.getWork(piece_id))
    if path.endswith(".mxl"):
        with zipfile.ZipFile(path) as z:
            return sum(i.file_size for i in z.infolist())
    return os.path.getsize(path)


def score_parts(piece_id: str) -> tuple[list[list[Note]], np.ndarray, np.ndarray]:
    """Notes of each part of a music21 corpus score (an opus gives its first score), and the score's
    beat and downbeat times (s)."""
    import pretty_midi
    from music21 import corpus, midi, stream

    size = score_bytes(piece_id)
    if size > MAX_SCORE_BYTES:
        raise ValueError(f"score too large to parse quickly ({size / 1e6:.1f} MB of notation, limit "
                         f"{MAX_SCORE_BYTES / 1e6:.0f} MB)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        score = corpus.parse(piece_id)
        if isinstance(score, stream.Opus):
            score = score.scores[0]
        data = midi.translate.streamToMidiFile(score).writestr()
        pm = pretty_midi.PrettyMIDI(io.BytesIO(data))
    parts = [notes_from_pretty_midi(_single(inst)) for inst in pm.instruments if not inst.is_drum]
    return [p for p in parts if p], pm.get_beats(), pm.get_downbeats()


def _single(inst):
    import pretty_midi

    pm = pretty_midi.PrettyMIDI()
    pm.instruments.append(inst)
    return pm


@dataclass
class Arrangement:
    programs: list[int]
    family: str
    tempo_factor: float
    transpose: int
    drums: bool = False


DRUM_PROB = 0.2                                  # share of pieces (not choir / organ) given a drum kit
KICK, SNARE, HAT = 36, 38, 42


def drum_part(beats: np.ndarray, downbeats: np.ndarray, end: float, curve, rng) -> list[Note]:
    """A plain kit on the score's beat grid: kick on the bar's first (and middle) beat, snare on the
    other even beats, closed hi-hat on every beat and half-beat; velocities follow the dynamics."""
    notes = []
    bar_pos = np.searchsorted(downbeats, beats, side="right") - 1
    index_in_bar = np.arange(len(beats)) - np.searchsorted(beats, downbeats[np.maximum(bar_pos, 0)])
    beats_per_bar = np.bincount(np.maximum(bar_pos, 0)).max() if len(beats) else 4
    for i, t in enumerate(beats):
        if t >= end:
            break
        k = int(index_in_bar[i])
        nxt = beats[i + 1] if i + 1 < len(beats) else t + (t - beats[i - 1] if i else 0.5)
        hits = [(HAT, t, 0.75), (HAT, (t + nxt) / 2, 0.55)]
        if k == 0 or (beats_per_bar == 4 and k == 2):
            hits.append((KICK, t, 1.0))
        elif k % 2 == 1:
            hits.append((SNARE, t, 0.9))
        for pitch, at, accent in hits:
            if at < end:
                vel = (35 + 80 * curve(at)) * accent + rng.normal(0, 5)
                notes.append(Note(at, min(at + 0.1, end), pitch, int(np.clip(round(vel), 1, 127)), 0, True))
    return notes


def arrange(parts: list[list[Note]], rng: np.random.Generator, max_seconds: float = 120.0,
            beats: np.ndarray | None = None, downbeats: np.ndarray | None = None):
    """Give each part a GM program (one family per piece, or a mix), stretch the tempo, transpose, and
    shape velocities with a slow random dynamic curve plus per-note jitter (music21's are constant).
    With the score's beat grid, a share of pieces also gets a drum part."""
    family = str(rng.choice(list(FAMILIES) + ["mixed"]))
    order = np.argsort([-np.mean([n.pitch for n in p]) for p in parts])         # high to low register
    programs = [0] * len(parts)
    for rank, i in enumerate(order):
        if family == "mixed":
            programs[i] = int(rng.choice(ALL_PROGRAMS))
        else:
            pool = FAMILIES[family]
            programs[i] = pool[min(round(rank * (len(pool) - 1) / max(1, len(parts) - 1)), len(pool) - 1)]
    tempo = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))               # time stretch factor
    shift = int(rng.integers(-5, 7))
    pitches = [n.pitch for p in parts for n in p]
    while min(pitches) + shift < 28:
        shift += 12
    while max(pitches) + shift > 103:
        shift -= 12
    periods = rng.uniform(4, 16, size=3)
    phases = rng.uniform(0, 2 * np.pi, size=3)
    curve = lambda t: 0.5 + 0.5 * np.mean(np.sin(2 * np.pi * t / periods + phases))
    notes = []
    for prog, part in zip(programs, parts):
        part_gain = rng.uniform(-8, 8)
        for n in part:
            on, off = n.onset / tempo, min(n.offset / tempo, max_seconds)
            if off - on < 0.05:                      # past the cut, or a sliver of a note cut by it
                continue
            vel = 35 + 80 * curve(on) + part_gain + rng.normal(0, 6)
            notes.append(Note(on, off, n.pitch + shift, int(np.clip(round(vel), 1, 127)),
                              prog, False))
    notes = resolve_overlaps(notes)
    drums = (beats is not None and len(beats) > 1 and family not in ("choir", "organ")
             and rng.random() < DRUM_PROB)
    if drums:
        end = min(max(n.offset for n in notes), max_seconds)
        db = downbeats if downbeats is not None and len(downbeats) else beats[:1]
        notes += drum_part(np.asarray(beats) / tempo, np.asarray(db) / tempo, end, curve, rng)
    notes.sort(key=lambda n: (n.onset, n.is_drum, n.program, n.pitch))
    return notes, Arrangement(programs, family, tempo, shift, bool(drums))


# -- rendering -----------------------------------------------------------------------------------
def require_fluidsynth(soundfont=SOUNDFONT) -> str:
    exe = shutil.which("fluidsynth")
    if exe is None or not Path(soundfont).is_file():
        raise CorpusError("FluidSynth and the FluidR3 GM soundfont are needed to render audio: "
                          "apt-get install -y fluidsynth fluid-soundfont-gm "
                          f"(looked for the `fluidsynth` program and {soundfont}).")
    return exe


def render_midi(midi_path, soundfont=SOUNDFONT, normalize: bool = True) -> np.ndarray:
    """FluidSynth render of a MIDI file: float32 mono at 16 kHz, peak-normalised to PEAK (normalize=False:
    at FluidSynth's own level, gain 0.5)."""
    exe = require_fluidsynth(soundfont)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "render.wav"
        cmd = [exe, "-ni", "-q", "-g", "0.5", "-r", str(SAMPLE_RATE), "-F", str(wav), str(soundfont),
               str(midi_path)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        if res.returncode != 0 or not wav.is_file():
            raise CorpusError(f"fluidsynth failed on {midi_path}: {res.stderr.strip()[-500:]}")
        audio = load_audio(wav)
    peak = float(np.abs(audio).max())
    return audio * (PEAK / peak) if peak > 0 and normalize else audio


def segment(audio: np.ndarray, notes: list[Note], max_tokens: int):
    """Mel segments (n, 128, 256) float16 and padded tokens (n, max_tokens) int16 of one piece."""
    mel = audio_to_mel(torch.from_numpy(audio))                                  # (128, T)
    n = max(math.ceil(mel.shape[-1] / SEGMENT_FRAMES), n_segments(notes) if notes else 1)
    mel = torch.nn.functional.pad(mel, (0, n * SEGMENT_FRAMES - mel.shape[-1]), value=-1.0)
    mel = mel.reshape(N_MELS, n, SEGMENT_FRAMES).permute(1, 0, 2)
    tokens, truncated = pad_tokens(encode_segments(notes, n), max_tokens)
    return mel.numpy().astype(np.float16), tokens, truncated


# -- the cache -----------------------------------------------------------------------------------
def _write_json(path: Path, obj) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=1)))


def _open_cache(output: Path, seed: int, source: str, max_tokens: int, max_seconds: float | None) -> Path:
    facts = {"format_version": FORMAT_VERSION, "source": source, "seed": seed, "max_seconds": max_seconds,
             "sample_rate": SAMPLE_RATE,
             "hop": HOP, "n_mels": N_MELS, "db_range": [DB_MIN, DB_MAX], "segment_frames": SEGMENT_FRAMES,
             "vocab_size": VOCAB.size, "velocity_bins": VOCAB.velocity_bins, "max_tokens": max_tokens}
    output = Path(output)
    (output / "pieces").mkdir(parents=True, exist_ok=True)
    build = output / "build.json"
    if build.is_file():
        old = json.loads(build.read_text())
        if old != facts:
            diff = {k: (old.get(k), v) for k, v in facts.items() if old.get(k) != v}
            raise CorpusError(f"{output} was built with other settings {diff}; resume with the same "
                              "settings or build into a new folder.")
    else:
        _write_json(build, facts)
    return output


def _savez(path, **arrays) -> None:
    with open(path, "wb") as f:                 # a file object: numpy would append .npz to a name
        np.savez_compressed(f, **arrays)


def _store_piece(out: Path, meta: dict, notes: list[Note], audio: np.ndarray, max_tokens: int) -> dict:
    key = piece_key(meta["id"])
    pieces = out / "pieces"
    mel, tokens, truncated = segment(audio, notes, max_tokens)
    write_midi(notes, pieces / f"{key}.mid")
    atomic_write(pieces / f"{key}.npz", lambda tmp: _savez(tmp, mel=mel, tokens=tokens))
    if meta["split"] != "train":
        import soundfile as sf

        atomic_write(pieces / f"{key}.flac",
                      lambda tmp: sf.write(tmp, np.clip(audio, -1, 1), SAMPLE_RATE, format="FLAC"))
    meta.update(key=key, seconds=round(len(audio) / SAMPLE_RATE, 3), n_segments=len(mel),
                n_notes=len(notes), truncated_segments=truncated)
    _write_json(pieces / f"{key}.json", meta)
    return meta


def _finish_index(out: Path) -> dict:
    metas = [json.loads(p.read_text()) for p in sorted((out / "pieces").glob("*.json"))]
    index = {"pieces": [m for m in metas if "error" not in m], "failed": [m for m in metas if "error" in m]}
    _write_json(out / "index.json", index)
    return index


def build_data(output=DEFAULT_CACHE, max_pieces: int | None = None, seed: int = 0,
               piece_ids: list[str] | None = None, splits: tuple[str, ...] = ("train", "val", "test"),
               max_seconds: float = 120.0, max_tokens: int = 1024) -> dict:
    """Arrange, render and segment music21 corpus pieces into `output`. Pieces already there are
    skipped (resumable); a piece music21 or FluidSynth cannot handle is recorded as failed and skipped.
    Returns the index."""
    from polydiff.core.progress import progress

    require_fluidsynth()
    out = _open_cache(Path(output), seed, "music21", max_tokens, max_seconds)
    ids = [i for i in (piece_ids or corpus_piece_ids()) if split_of(i) in splits]
    ids = ids[:max_pieces] if max_pieces is not None else ids
    for pid in progress(ids, desc="audio corpus", total=len(ids)):
        key = piece_key(pid)
        if (out / "pieces" / f"{key}.json").is_file():
            continue
        meta = {"id": pid, "split": split_of(pid), "source": "music21"}
        try:
            parts, beats, downbeats = score_parts(pid)
            if not parts:
                raise MidiError("no notes")
            rng = np.random.default_rng([seed, int(_hash01("arr:" + pid) * 2**32)])
            notes, arr = arrange(parts, rng, max_seconds, beats, downbeats)
            with tempfile.TemporaryDirectory() as tmp:
                mid = Path(tmp) / "piece.mid"
                write_midi(notes, mid)
                notes = read_midi(mid)                     # exactly what FluidSynth hears (tick-rounded)
                audio = render_midi(mid)
        except CorpusError:
            raise
        except Exception as err:  # noqa: BLE001  music21 / MIDI conversion failures of single pieces are skipped
            log.warning("skipping %s: %s: %s", pid, type(err).__name__, err)
            _write_json(out / "pieces" / f"{key}.json", {**meta, "key": key, "error": f"{type(err).__name__}: {err}"})
            continue
        meta.update(asdict(arr))
        _store_piece(out, meta, notes, audio, max_tokens)
    return _finish_index(out)


# -- a user's folder of aligned MIDI + audio -----------------------------------------------------
AUDIO_EXT = (".wav", ".flac", ".ogg")


def find_aligned_pairs(folder) -> list[tuple[str, Path, Path]]:
    """(piece id, MIDI, audio) pairs: Slakh2100 (TrackXXXXX/all_src.mid + mix.flac) or MAESTRO-style
    (song.midi / song.mid beside song.wav / song.flac)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CorpusError(f"{folder}: no such folder of MIDI + audio pairs.")
    pairs = []
    for mid in sorted(folder.rglob("*")):
        if mid.suffix.lower() not in (".mid", ".midi"):
            continue
        if mid.name == "all_src.mid":
            audio = [mid.parent / f"mix{e}" for e in AUDIO_EXT]
        else:
            audio = [mid.with_suffix(e) for e in AUDIO_EXT]
        audio = [a for a in audio if a.is_file()]
        if audio:
            pid = (mid.parent if mid.name == "all_src.mid" else mid).relative_to(folder).as_posix()
            pairs.append((pid, mid, audio[0]))
    if not pairs:
        raise CorpusError(f"{folder}: found no aligned MIDI + audio. Expected Slakh2100 "
                          "(TrackXXXXX/all_src.mid + mix.flac) or MAESTRO (x.midi beside x.wav).")
    return pairs


def _folder_split(pid: str) -> str:
    parts = {p.lower() for p in pid.split("/")}
    for name, split in (("train", "train"), ("validation", "val"), ("val", "val"), ("test", "test")):
        if name in parts:
            return split
    return split_of(pid)


def build_from_folder(folder, output, max_pieces: int | None = None, max_tokens: int = 1024) -> dict:
    """Segments of a user's aligned MIDI + audio folder, in the same cache format as `build_data`.
    Split from folder names (train / validation / test) when present, else by hash."""
    from polydiff.core.progress import progress

    pairs = find_aligned_pairs(folder)[:max_pieces]
    out = _open_cache(Path(output), 0, f"folder:{Path(folder).resolve()}", max_tokens, None)
    for pid, mid, wav in progress(pairs, desc="audio folder", total=len(pairs)):
        key = piece_key(pid)
        if (out / "pieces" / f"{key}.json").is_file():
            continue
        meta = {"id": pid, "split": _folder_split(pid), "source": str(mid)}
        try:
            notes = read_midi(mid)
            audio = load_audio(wav)
        except (MidiError, AudioError) as err:      # one bad pair in a big folder is recorded and skipped
            log.warning("skipping %s", err)
            _write_json(out / "pieces" / f"{key}.json", {**meta, "key": key, "error": str(err)})
            continue
        _store_piece(out, meta, notes, audio, max_tokens)
    return _finish_index(out)


# -- reading the cache ---------------------------------------------------------------------------
def load_index(cache) -> dict:
    path = Path(cache) / "index.json"
    if not path.is_file():
        raise CorpusError(f"{cache}: no audio corpus here (index.json missing). Build one with "
                          f"`polydiff audio build-data -o {cache}`.")
    return json.loads(path.read_text())


@lru_cache(maxsize=32)
def _load_piece(path: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as z:
        return z["mel"], z["tokens"]


class AudioSegments(torch.utils.data.Dataset):
    """Segments of one split: (mel (128, 256), tokens (max_tokens,) long, context mel (128, 256)),
    mels float32 in [-1, 1]; the context is the previous segment of the same piece, or silence.
    `max_tokens` crops the token rows (a cropped row ends in EOS); 99 % of corpus segments hold < 300."""

    def __init__(self, cache=DEFAULT_CACHE, split: str = "train", max_tokens: int | None = None):
        self.cache = Path(cache)
        self.max_tokens = max_tokens
        self.pieces = [p for p in load_index(cache)["pieces"] if p["split"] == split]
        if not self.pieces:
            raise CorpusError(f"{cache}: no {split} pieces. Build more pieces (--max-pieces) or "
                              "choose another split.")
        self.items = [(i, s) for i, p in enumerate(self.pieces) for s in range(p["n_segments"])]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx):
        i, s = self.items[idx]
        mel, tokens = _load_piece(str(self.cache / "pieces" / f"{self.pieces[i]['key']}.npz"))
        seg = torch.from_numpy(mel[s].astype(np.float32))
        ctx = torch.from_numpy(mel[s - 1].astype(np.float32)) if s > 0 else torch.full_like(seg, -1.0)
        tok = torch.from_numpy(tokens[s].astype(np.int64))
        if self.max_tokens is not None and len(tok) > self.max_tokens:
            tok = tok[: self.max_tokens].clone()
            if tok[-1] != VOCAB.pad:
                tok[-1] = VOCAB.eos
        return seg, tok, ctx
