"""polydiff.audio: music from MIDI notes by spectrogram diffusion, and continuation of a recording.

    polydiff.audio.synth("song.mid").save("song.wav")
    polydiff.audio.continue_("start.wav", seconds=10).save("more.wav")

Modules: notes (MIDI <-> segment tokens), codec (log-mel, Griffin-Lim, WAV/PNG), corpus (music21 +
FluidSynth corpus, user folders, dataset), model (the DiT and its guidance), train (the recipe),
pipeline (synth / continue_), demo, metrics (against ground truth), baseline (sine synth).
"""

_LAZY = {"build_data": "corpus", "build_from_folder": "corpus", "AudioSegments": "corpus",
         "read_midi": "notes", "write_midi": "notes", "audio_to_mel": "codec", "GriffinLim": "codec",
         "load_audio": "codec", "write_wav": "codec", "sine_synth": "baseline", "all_metrics": "metrics",
         "synth": "pipeline", "continue_": "pipeline", "Sampling": "pipeline", "load_model": "pipeline",
         "AudioDiffusion": "model"}


def __getattr__(name):
    # keep `import polydiff.audio` (and the CLI) free of torch / music21 imports until something is used
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
