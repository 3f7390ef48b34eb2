"""Onsets that are not attacks: what the onset detector finds in FluidSynth renders of lone held notes.

The reference of the audio benchmark (`audio_eval.py`) is the FluidSynth + FluidR3_GM render, and its onsets
are librosa's detections in it (`polydiff.audio.metrics.onsets`). For sustained instruments part of them
are not at any note onset. This renders one 3 s note per program (pitch 55 and 67, velocity 90) and counts
the detections after the first (the attack); for the programs that have some, it renders the same note
at two later onsets and says whether the detections come at the same times after note-on (then the
sound font's modulation starts at note-on and is predictable from the notes).

    .venv/bin/python benchmarks/audio_tremolo.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from polydiff.audio.corpus import render_midi
from polydiff.audio.metrics import ONSET_WINDOW, onsets
from polydiff.audio.notes import Note, write_midi

PROGRAMS = {0: "piano", 11: "vibraphone", 12: "marimba", 19: "church organ", 20: "reed organ", 24: "nylon guitar",
            25: "steel guitar", 32: "acoustic bass", 40: "violin", 41: "viola", 42: "cello", 46: "harp",
            48: "strings", 52: "choir aahs", 53: "voice oohs", 56: "trumpet", 57: "trombone", 58: "tuba",
            60: "french horn", 68: "oboe", 69: "cor anglais", 70: "bassoon", 71: "clarinet", 73: "flute"}


def detections(program: int, pitch: int, onset: float, folder: Path) -> np.ndarray:
    """Detected onset times (s after note-on) of one 3 s note rendered alone."""
    mid = folder / "one.mid"
    write_midi([Note(onset, onset + 3.0, pitch, 90, program)], mid)
    return onsets(render_midi(mid)) - onset


def main() -> None:
    print("extra detections (after the attack) in a lone 3 s note, pitch 55 / 67; and whether they repeat "
          f"within {ONSET_WINDOW * 1000:.0f} ms after note-on at onsets 0.87 and 1.33 s (pitch with more of them)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for prog, name in PROGRAMS.items():
            det = {p: detections(prog, p, 0.5, folder) for p in (55, 67)}
            extra = {p: len(d[d > ONSET_WINDOW]) for p, d in det.items()}
            line = f"  {prog:3d} {name:14s} {extra[55]:2d} / {extra[67]:2d}"
            pitch = max(extra, key=extra.get)
            if extra[pitch]:
                base = det[pitch][det[pitch] > ONSET_WINDOW]
                same = []
                for on in (0.87, 1.33):
                    d = detections(prog, pitch, on, folder)
                    d = d[d > ONSET_WINDOW]
                    same.append(len(d) == len(base) and bool(np.all(np.abs(d - base) <= ONSET_WINDOW)))
                line += f"   same times after note-on: {'yes' if all(same) else 'no'} (first at {base[0]:.2f} s)"
            print(line, flush=True)


if __name__ == "__main__":
    main()
