"""The audio part of `polydiff demo`: a short MIDI tune rendered by the model, then continued on its notes
and freely.

Everything is written into `folder` and returned as `Artifact`s for the results page. About a minute
on a 2-core CPU (one 5.12 s segment synthesised, two continued).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path

from polydiff.core.report import Artifact

from .notes import Note, held_over, write_midi

log = logging.getLogger("polydiff.audio")

# a two-bar phrase for flute over a string bass line, in C major, 100 bpm (0.6 s a beat)
MELODY = [72, 74, 76, 77, 79, 77, 76, 74, 72, 76, 79, 84, 79, 76, 72, 72]
BASS = [48, 43, 45, 41, 48, 43, 41, 43]


def demo_notes(beat: float = 0.6) -> list[Note]:
    """A tune that is not from the corpus: melody in eighths (flute, GM 73), bass in halves (cello, 42)."""
    melody = [Note(i * beat / 2, (i + 0.9) * beat / 2, p, 96 - 8 * (i % 2), 73) for i, p in enumerate(MELODY)]
    bass = [Note(i * beat, (i + 0.95) * beat, p, 80, 42) for i, p in enumerate(BASS)]
    return sorted(melody + bass, key=lambda n: (n.onset, n.pitch))


def demo(folder, device="cpu", seed: int = 0, checkpoint=None) -> list[Artifact]:
    from .corpus import SOUNDFONT, render_midi
    from .pipeline import DEFAULT_CHECKPOINT, continue_, load_model, synth

    if checkpoint is None and not (DEFAULT_CHECKPOINT / "config.json").is_file():
        log.warning("audio demo skipped: no shipped checkpoint at %s (train one with `polydiff train audio "
                    "--config audio/configs/timbre.yaml`, then audio/configs/sharp.yaml and bank.yaml)", DEFAULT_CHECKPOINT)
        return []
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = load_model(checkpoint, device)
    mid = folder / "audio_tune.mid"
    write_midi(demo_notes(), mid)
    out = []
    if shutil.which("fluidsynth") and SOUNDFONT.is_file():
        from .codec import write_wav

        write_wav(folder / "audio_tune_fluidsynth.wav", render_midi(mid))
        out.append(Artifact("audio", folder / "audio_tune_fluidsynth.wav", "Reference: FluidSynth render",
                            "The same notes rendered by FluidSynth with the FluidR3 GM soundfont."))
    song = synth(mid, model=model, seed=seed)
    song.save(folder / "audio_synth.wav", spectrogram=folder / "audio_synth.png")
    out += [Artifact("audio", folder / "audio_synth.wav", "Synthesis from MIDI",
                     "A flute melody over a cello bass (a tune not in the training corpus), rendered by the "
                     "spectrogram diffusion model segment by segment and vocoded by Griffin-Lim."),
            Artifact("image", folder / "audio_synth.png", "Mel spectrogram of the synthesis")]
    start = song.audio[: 16000 * 4]
    # the tune played twice: what sounds after the 4 s start, held-over notes without a new attack
    tune = demo_notes()
    length = max(n.offset for n in tune) + 0.3
    ahead = held_over(tune + [replace(n, onset=n.onset + length, offset=n.offset + length) for n in tune], 4.0, 9.12)
    led = continue_(start, 5.12, notes=ahead, model=model, seed=seed)
    led.save(folder / "audio_continue_notes.wav", spectrogram=folder / "audio_continue_notes.png")
    out += [Artifact("audio", folder / "audio_continue_notes.wav", "Continuation following notes",
                     "The first 4 s of the synthesis, then 5.12 s the model continues from it while following "
                     "the rest of the tune and its repeat (the notes given as MIDI)."),
            Artifact("image", folder / "audio_continue_notes.png", "Mel spectrogram of the continuation on notes")]
    more = continue_(start, 5.12, model=model, seed=seed)
    more.save(folder / "audio_continue.wav", spectrogram=folder / "audio_continue.png")
    out += [Artifact("audio", folder / "audio_continue.wav", "Free continuation",
                     "The first 4 s of the synthesis, then 5.12 s the model continues with no notes given "
                     "(in the style of the start; it drifts, as nothing tells it what comes next)."),
            Artifact("image", folder / "audio_continue.png", "Mel spectrogram of the free continuation")]
    return out
