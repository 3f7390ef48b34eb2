"""polydiff.audio: music from MIDI notes by spectrogram diffusion (in progress; see issue 6).

Modules: notes (MIDI <-> segment tokens), codec (log-mel, Griffin-Lim, WAV/PNG), corpus (music21 +
FluidSynth corpus, user folders, dataset), metrics (against ground truth), baseline (sine synth).
"""

_LAZY = {"build_data": "corpus", "build_from_folder": "corpus", "AudioSegments": "corpus",
         "read_midi": "notes", "write_midi": "notes", "audio_to_mel": "codec", "GriffinLim": "codec",
         "load_audio": "codec", "write_wav": "codec", "sine_synth": "baseline", "all_metrics": "metrics"}


def __getattr__(name):
    # keep `import polydiff.audio` (and the CLI) free of torch / music21 imports until something is used
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
