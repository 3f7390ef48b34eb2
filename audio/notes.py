"""MIDI notes <-> per-segment event tokens (the note conditioning of the spectrogram diffusion model).

A piece is cut into segments of `SEGMENT_STEPS` time steps of 10 ms (5.12 s = 256 mel frames).
Each segment is encoded on its own, in the style of MT3 / Hawthorne et al. 2022:

    [program p] pitch k ... TIE       notes still sounding at the segment start (the tie section)
    time t [program p] [velocity v] pitch k | drum k ...        events, in time order
    EOS

* `time t` is the position inside the segment, t in 0..SEGMENT_STEPS (a shift from the segment start,
  so every segment decodes without its predecessors).
* `program`, `velocity` are state: emitted only when they change, reset at every segment start.
* `velocity 0` means the following pitches are note-offs; velocities 1..127 fall into `velocity_bins`
  bins (bin = ceil(v * bins / 127), decoded to the bin centre).
* Onsets live in [0, SEGMENT_STEPS), offsets in (0, SEGMENT_STEPS]: a note still sounding at the end
  of a segment has no offset there and appears in the next segment's tie section.
* Drums have onsets only (`drum k` with the current velocity); they decode to a fixed short length.

Token ids are laid out as [pad, eos, tie | time | program | velocity | pitch | drum]; `Vocab` holds the
sizes and offsets, and `VOCAB` is the default one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

STEP_SECONDS = 0.01        # token time resolution
SEGMENT_STEPS = 512        # 5.12 s per segment = 256 frames at 50 frames/s
DRUM_STEPS = 10            # decoded drum length (drums carry no offset)


class MidiError(ValueError):
    """A MIDI file that cannot be used (missing, unreadable, not MIDI, or without notes)."""


@dataclass(frozen=True)
class Note:
    onset: float           # seconds
    offset: float          # seconds, > onset
    pitch: int             # MIDI pitch 0..127 (drum note number for drums)
    velocity: int          # 1..127
    program: int = 0       # General MIDI program 0..127 (ignored for drums)
    is_drum: bool = False


@dataclass(frozen=True)
class Vocab:
    """Token layout. Offsets are derived from the sizes, so a different bin count stays consistent."""

    segment_steps: int = SEGMENT_STEPS
    velocity_bins: int = 8
    n_special: int = field(default=3, init=False)      # pad=0, eos=1, tie=2

    pad: int = field(default=0, init=False)
    eos: int = field(default=1, init=False)
    tie: int = field(default=2, init=False)

    @property
    def time_offset(self) -> int:
        return self.n_special

    @property
    def n_time(self) -> int:
        return self.segment_steps + 1               # t = 0..segment_steps inclusive

    @property
    def program_offset(self) -> int:
        return self.time_offset + self.n_time

    @property
    def velocity_offset(self) -> int:
        return self.program_offset + 128

    @property
    def n_velocity(self) -> int:
        return self.velocity_bins + 1               # bin 0 = note-off

    @property
    def pitch_offset(self) -> int:
        return self.velocity_offset + self.n_velocity

    @property
    def drum_offset(self) -> int:
        return self.pitch_offset + 128

    @property
    def size(self) -> int:
        return self.drum_offset + 128

    def velocity_to_bin(self, velocity: int) -> int:
        return 0 if velocity <= 0 else min(self.velocity_bins, math.ceil(velocity * self.velocity_bins / 127))

    def bin_to_velocity(self, b: int) -> int:
        return 0 if b <= 0 else round((b - 0.5) * 127 / self.velocity_bins)

    def describe(self, token: int) -> str:
        """Human-readable name of one token (for debugging and docs)."""
        for name, lo, n in (("time", self.time_offset, self.n_time), ("program", self.program_offset, 128),
                            ("velocity", self.velocity_offset, self.n_velocity),
                            ("pitch", self.pitch_offset, 128), ("drum", self.drum_offset, 128)):
            if lo <= token < lo + n:
                return f"{name} {token - lo}"
        return {self.pad: "pad", self.eos: "eos", self.tie: "tie"}.get(token, f"invalid {token}")


VOCAB = Vocab()


# -- MIDI files ---------------------------------------------------------------------------------
def read_midi(path) -> list[Note]:
    """All notes of a MIDI file, sorted by onset. Raises MidiError naming the file when it is unusable."""
    import pretty_midi

    path = Path(path)
    if not path.is_file():
        raise MidiError(f"{path}: no such MIDI file. Check the path.")
    if path.stat().st_size == 0:
        raise MidiError(f"{path}: the file is empty (0 bytes), not a MIDI file. Export the MIDI again.")
    try:
        pm = pretty_midi.PrettyMIDI(str(path))
    except Exception as err:  # noqa: BLE001  mido/pretty_midi raise many types (OSError, EOFError, KeyError, ValueError)
        raise MidiError(f"{path}: not a readable Standard MIDI File ({type(err).__name__}: {err}). "
                        "Give a .mid/.midi file written by a sequencer or notation program.") from None
    notes = notes_from_pretty_midi(pm)
    if not notes:
        raise MidiError(f"{path}: the MIDI file contains no notes. Give a file with at least one note.")
    return notes


def notes_from_pretty_midi(pm) -> list[Note]:
    notes = [Note(float(n.start), float(n.end), int(n.pitch), int(n.velocity), int(inst.program),
                  bool(inst.is_drum))
             for inst in pm.instruments for n in inst.notes if n.end > n.start and n.velocity > 0]
    return sorted(notes, key=lambda n: (n.onset, n.is_drum, n.program, n.pitch))


def notes_to_pretty_midi(notes: list[Note]):
    """One instrument per (program, is_drum), in first-appearance order."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI()
    insts: dict[tuple[int, bool], pretty_midi.Instrument] = {}
    for n in notes:
        key = (0 if n.is_drum else n.program, n.is_drum)
        if key not in insts:
            insts[key] = pretty_midi.Instrument(program=key[0], is_drum=n.is_drum)
            pm.instruments.append(insts[key])
        insts[key].notes.append(pretty_midi.Note(velocity=int(n.velocity), pitch=int(n.pitch),
                                                 start=float(n.onset), end=float(n.offset)))
    return pm


def write_midi(notes: list[Note], path) -> None:
    """Write notes to a MIDI file atomically (temp file in the same folder, then rename)."""
    from .codec import atomic_write

    atomic_write(path, lambda tmp: notes_to_pretty_midi(notes).write(tmp))


def held_over(notes: list[Note], t0: float, end: float = math.inf) -> list[Note]:
    """The notes to give `continue` after the first t0 seconds of a piece: those sounding in [t0, end),
    t0 moved to time 0, cut at `end`. Notes begun before t0 keep their negative onset, so the pipeline
    takes them as held over from the start (ties, no new attack), as they sound in the piece itself."""
    return [Note(n.onset - t0, min(n.offset, end) - t0, n.pitch, n.velocity, n.program, n.is_drum)
            for n in notes if n.offset > t0 + 0.01 and n.onset < end]


# -- notes -> tokens ----------------------------------------------------------------------------
def _resolve(notes: list, onset, offset, key, shorten) -> list:
    """Tokens (like a MIDI channel) cannot hold two sounding notes of one (program, pitch): a note that
    starts while the same key sounds ends the earlier one there; of two starting together the longer
    is kept."""
    out, last = [], {}
    for n in sorted(notes, key=lambda n: (onset(n), -offset(n))):
        k = key(n)
        if k is not None and k in last:
            prev = out[last[k]]
            if onset(n) == onset(prev):
                continue
            if onset(n) < offset(prev):
                out[last[k]] = shorten(prev, onset(n))
        if k is not None:
            last[k] = len(out)
        out.append(n)
    return out


def resolve_overlaps(notes: list[Note]) -> list[Note]:
    """Notes with same-key overlaps resolved (see `_resolve`); drums are left alone."""
    return _resolve(notes, lambda n: n.onset, lambda n: n.offset,
                    lambda n: None if n.is_drum else (n.program, n.pitch),
                    lambda n, t: Note(n.onset, t, n.pitch, n.velocity, n.program, n.is_drum))


def quantize(notes: list[Note]) -> list[tuple[int, int, int, int, int, bool]]:
    """Notes as integer steps (onset, offset, pitch, velocity, program, drum); every note lasts >= 1 step
    and same-key overlaps are resolved."""
    out = []
    for n in notes:
        on = round(n.onset / STEP_SECONDS)
        off = max(round(n.offset / STEP_SECONDS), on + 1)
        out.append((on, off, n.pitch, n.velocity, 0 if n.is_drum else n.program, n.is_drum))
    return _resolve(out, lambda n: n[0], lambda n: n[1], lambda n: None if n[5] else (n[4], n[2]),
                    lambda n, t: (n[0], t, *n[2:]))


def n_segments(notes: list[Note], vocab: Vocab = VOCAB) -> int:
    """Segments needed to hold every onset and offset."""
    last = max((off for _, off, *_ in quantize(notes)), default=0)
    return max(1, math.ceil(last / vocab.segment_steps))


def encode_segments(notes: list[Note], n_segs: int | None = None, vocab: Vocab = VOCAB) -> list[list[int]]:
    """Token list (ending in EOS) for each segment of the piece."""
    q = quantize(notes)
    n_segs = n_segments(notes, vocab) if n_segs is None else n_segs
    return [_encode_window(q, s * vocab.segment_steps, vocab) for s in range(n_segs)]


def window_tokens(notes: list[Note], start_step: int, vocab: Vocab = VOCAB) -> list[int]:
    """The tokens of one segment-long window starting at `start_step` (10-ms steps, any integer, also
    negative or off the segment grid): what `encode_segments` gives for a segment starting there, with
    notes already sounding at `start_step` in the tie section. The pipelines' overlapping windows use it;
    at start_step = k * SEGMENT_STEPS it equals encode_segments(notes)[k]."""
    return _encode_window(quantize(notes), start_step, vocab)


def _encode_window(q, start: int, vocab: Vocab) -> list[int]:
    end = start + vocab.segment_steps
    ties = sorted((prog, pitch) for on, off, pitch, _, prog, drum in q if not drum and on < start < off)
    # (time, kind, program, velocity bin, pitch, drum); kind 0 = off sorts before 1 = on at equal time
    events = []
    for on, off, pitch, vel, prog, drum in q:
        if start <= on < end:
            events.append((on - start, 1, prog, vocab.velocity_to_bin(vel), pitch, drum))
        if not drum and start < off <= end:
            events.append((off - start, 0, prog, 0, pitch, False))
    events.sort(key=lambda e: (e[0], e[1], e[5], e[2], e[4]))
    toks: list[int] = []
    prog_state = None
    for prog, pitch in ties:
        if prog != prog_state:
            toks.append(vocab.program_offset + prog)
            prog_state = prog
        toks.append(vocab.pitch_offset + pitch)
    toks.append(vocab.tie)
    time_state, prog_state, vel_state = None, None, None
    for t, _, prog, vbin, pitch, drum in events:
        if t != time_state:
            toks.append(vocab.time_offset + t)
            time_state = t
        if not drum and prog != prog_state:
            toks.append(vocab.program_offset + prog)
            prog_state = prog
        if vbin != vel_state:
            toks.append(vocab.velocity_offset + vbin)
            vel_state = vbin
        toks.append((vocab.drum_offset if drum else vocab.pitch_offset) + pitch)
    toks.append(vocab.eos)
    return toks


# -- tokens -> notes ----------------------------------------------------------------------------
def decode_segments(segments: list[list[int]], vocab: Vocab = VOCAB,
                    tie_velocity: int = 64) -> list[Note]:
    """Notes from consecutive segments' tokens. Tolerant of model output: a note left sounding that the
    next tie section does not list ends at the boundary; a tied note with no predecessor starts at the
    segment start with `tie_velocity`; notes never closed end at the last segment's end."""
    L = vocab.segment_steps
    active: dict[tuple[int, int], tuple[int, int]] = {}      # (program, pitch) -> (onset step, velocity)
    done: list[tuple[int, int, int, int, int, bool]] = []

    def close(key, step):
        on, vel = active.pop(key)
        done.append((on, max(step, on + 1), key[1], vel, key[0], False))

    for s, toks in enumerate(segments):
        start = s * L
        toks = [int(t) for t in toks]
        if vocab.tie in toks:
            cut = toks.index(vocab.tie)
            tie_toks, body = toks[:cut], toks[cut + 1:]
        else:
            tie_toks, body = [], toks
        tied, prog = set(), 0
        for t in tie_toks:
            if vocab.program_offset <= t < vocab.program_offset + 128:
                prog = t - vocab.program_offset
            elif vocab.pitch_offset <= t < vocab.pitch_offset + 128:
                tied.add((prog, t - vocab.pitch_offset))
        for key in [k for k in active if k not in tied]:
            close(key, start)
        for key in tied - set(active):
            active[key] = (start, tie_velocity)
        time, prog, vbin = start, 0, vocab.velocity_bins // 2 + 1
        for t in body:
            if t in (vocab.eos, vocab.pad):
                break
            if vocab.time_offset <= t < vocab.time_offset + vocab.n_time:
                time = start + t - vocab.time_offset
            elif vocab.program_offset <= t < vocab.program_offset + 128:
                prog = t - vocab.program_offset
            elif vocab.velocity_offset <= t < vocab.velocity_offset + vocab.n_velocity:
                vbin = t - vocab.velocity_offset
            elif vocab.pitch_offset <= t < vocab.pitch_offset + 128:
                key = (prog, t - vocab.pitch_offset)
                if key in active:
                    close(key, time)                          # off, or a re-onset of a sounding note
                if vbin > 0:
                    active[key] = (time, vocab.bin_to_velocity(vbin))
            elif vocab.drum_offset <= t < vocab.drum_offset + 128 and vbin > 0:
                done.append((time, time + DRUM_STEPS, t - vocab.drum_offset,
                             vocab.bin_to_velocity(vbin), 0, True))
    end = len(segments) * L
    for key in list(active):
        close(key, end)
    done.sort(key=lambda n: (n[0], n[5], n[4], n[2]))
    return [Note(on * STEP_SECONDS, off * STEP_SECONDS, pitch, vel, prog, drum)
            for on, off, pitch, vel, prog, drum in done]


def pad_tokens(segments: list[list[int]], max_len: int, vocab: Vocab = VOCAB) -> tuple[np.ndarray, int]:
    """(n_segments, max_len) int16 array padded with `pad`; returns it and how many segments were cut
    short (a truncated segment keeps EOS as its last token)."""
    out = np.full((len(segments), max_len), vocab.pad, dtype=np.int16)
    truncated = 0
    for i, toks in enumerate(segments):
        if len(toks) > max_len:
            toks = toks[:max_len - 1] + [vocab.eos]
            truncated += 1
        out[i, :len(toks)] = toks
    return out, truncated
