"""Registers the audio plugin with the polydiff CLI (entry-point group `polydiff.plugins`)."""

from pathlib import Path

import click
from polydiff.core.checkpoint import find_checkpoints
from polydiff.core.cli import common_options, output_option
from polydiff.core.plugin import Plugin

CHECKPOINTS = Path(__file__).parent / "checkpoints"


@click.group(name="audio")
def cli():
    """Music from MIDI notes by spectrogram diffusion; continue a piece segment by segment."""


@cli.command("build-data")
@output_option(required=False, help="Cache folder [default: .cache/audio_corpus].")
@click.option("--max-pieces", type=click.IntRange(min=1), default=None, help="Stop after N pieces.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
              help="Seed of the arrangements (instruments, tempo, transposition, dynamics).")
@click.option("--max-seconds", type=click.FloatRange(min=5.12), default=120.0, show_default=True,
              help="Cut each piece after this many seconds.")
@click.option("--from-folder", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Use a folder of aligned MIDI + audio (Slakh2100 or MAESTRO layout) instead of music21.")
def build_data_cmd(output, max_pieces, seed, max_seconds, from_folder):
    """Build the (notes, mel) segment corpus: music21 scores arranged for General MIDI and rendered
    by FluidSynth, or a user's aligned folder. Resumable: pieces already built are skipped."""
    from .corpus import DEFAULT_CACHE, CorpusError, build_data, build_from_folder
    from .notes import MidiError

    output = output or DEFAULT_CACHE
    try:
        if from_folder is not None:
            index = build_from_folder(from_folder, output, max_pieces=max_pieces)
        else:
            index = build_data(output, max_pieces=max_pieces, seed=seed, max_seconds=max_seconds)
    except (CorpusError, MidiError) as err:
        raise click.ClickException(str(err)) from None
    counts = {}
    for p in index["pieces"]:
        counts[p["split"]] = counts.get(p["split"], 0) + p["n_segments"]
    click.echo(f"{output}: {len(index['pieces'])} pieces ({len(index['failed'])} skipped), segments "
               + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


def reconstruct(audio_path, output, spectrogram=None, n_iter: int = 64):
    """Audio file -> mel -> Griffin-Lim -> WAV (the codec's ceiling, heard); returns the mel (128, T).
    The input is checked before anything is written."""
    from .codec import GriffinLim, audio_to_mel, load_audio, write_spectrogram_png, write_wav

    mel = audio_to_mel(load_audio(audio_path))
    if mel.shape[-1] == 0:
        from .codec import AudioError

        raise AudioError(f"{audio_path}: shorter than one 20 ms frame; give a longer recording.")
    write_wav(output, GriffinLim(n_iter=n_iter).mel_to_audio(mel))
    if spectrogram is not None:
        write_spectrogram_png(spectrogram, mel, title=Path(audio_path).name)
    return mel


@cli.command("reconstruct")
@click.argument("audio", type=click.Path(dir_okay=False, path_type=Path))
@output_option(required=True, help="Output WAV (16 kHz mono).")
@click.option("--spectrogram", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the mel spectrogram as a PNG.")
@click.option("--iterations", type=click.IntRange(min=1), default=64, show_default=True,
              help="Griffin-Lim iterations.")
def reconstruct_cmd(audio, output, spectrogram, iterations):
    """Round-trip AUDIO through the log-mel codec and the Griffin-Lim vocoder: what the diffusion
    model's output can sound like at best."""
    from .codec import AudioError

    try:
        reconstruct(audio, output, spectrogram, iterations)
    except AudioError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"wrote {output}" + (f" and {spectrogram}" if spectrogram else ""))


def sampling_options(f):
    """--sampler, --steps, --cfg-notes, --cfg-context, --spectrogram, --checkpoint (defaults: `Sampling`)."""
    from polydiff.core.samplers import METHODS

    from .pipeline import Sampling

    d = Sampling()
    opts = [
        click.option("--sampler", type=click.Choice(METHODS), default=d.sampler, show_default=True),
        click.option("--steps", type=click.IntRange(min=1), default=d.steps, show_default=True,
                     help="Sampler steps per segment."),
        click.option("--cfg-notes", type=click.FloatRange(min=0), default=d.cfg_notes, show_default=True,
                     help="Guidance scale of the notes (1 = none)."),
        click.option("--cfg-context", type=click.FloatRange(min=0), default=d.cfg_context, show_default=True,
                     help="Guidance scale of the previous segment (1 = none)."),
        click.option("--sigma-min", type=click.FloatRange(min=0, min_open=True), default=d.sigma_min,
                     show_default=True, help="Lowest noise level of the schedule (the last step denoises from it)."),
        click.option("--temperature", type=click.FloatRange(0, 1), default=d.temperature,
                     help="Scale of the starting noise (0 = its mean: the deterministic conditional mean) "
                          "[default: 0 with notes, 1 for free continuation]."),
        click.option("--texture", type=click.FloatRange(min=0), default=d.texture,
                     help="Noise level of a last texture pass (0 = none) [default: 0 for synth, "
                          "0.05 for continue, to match the real start's detail]."),
        click.option("--attack", type=click.FloatRange(0, 0.2), default=d.attack, show_default=True,
                     help="Note-timed attack shaping (0 = off; 0.1 = 5 dB accents at note onsets and a gap "
                          "before re-struck notes)."),
        click.option("--spectrogram", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Also write the mel spectrogram as a PNG."),
        click.option("--checkpoint", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Model folder [default: the shipped audio/checkpoints/bank]."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _run(job):
    """Run a pipeline job, turning user errors into one-line CLI errors."""
    from polydiff.core.checkpoint import CheckpointError

    from .codec import AudioError
    from .notes import MidiError

    try:
        return job()
    except (AudioError, MidiError, CheckpointError, ValueError) as err:
        raise click.ClickException(str(err)) from None


@cli.command("synth")
@click.argument("midi", type=click.Path(dir_okay=False, path_type=Path))
@output_option(required=True, help="Output WAV (16 kHz mono).")
@sampling_options
@common_options
def synth_cmd(midi, output, sampler, steps, cfg_notes, cfg_context, sigma_min, temperature, texture, attack,
              spectrogram, checkpoint, device, seed):
    """Render MIDI to music, segment by segment, each conditioned on its notes and the previous segment."""
    from .pipeline import Sampling, synth

    opts = Sampling(sampler=sampler, steps=steps, cfg_notes=cfg_notes, cfg_context=cfg_context, sigma_min=sigma_min,
                    temperature=temperature, texture=texture, attack=attack, seed=seed)
    # stream when no picture is asked for: constant memory however long the piece
    _run(lambda: synth(midi, checkpoint, device, opts, stream=spectrogram is None).save(output, spectrogram))
    click.echo(f"wrote {output}" + (f" and {spectrogram}" if spectrogram else ""))


@cli.command("continue")
@click.argument("start", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--seconds", type=float, required=True, help="Seconds of music to add after START.")
@click.option("--notes", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="MIDI to follow (time 0 = the end of START); without it the music continues freely.")
@output_option(required=True, help="Output WAV: START followed by the continuation.")
@sampling_options
@common_options
def continue_cmd(start, seconds, notes, output, sampler, steps, cfg_notes, cfg_context, sigma_min, temperature,
                 texture, attack, spectrogram, checkpoint, device, seed):
    """Continue a recording: write START followed by SECONDS of new music."""
    from .pipeline import Sampling, continue_

    opts = Sampling(sampler=sampler, steps=steps, cfg_notes=cfg_notes, cfg_context=cfg_context, sigma_min=sigma_min,
                    temperature=temperature, texture=texture, attack=attack, seed=seed)
    _run(lambda: continue_(start, seconds, notes, checkpoint, device, opts, stream=spectrogram is None)
         .save(output, spectrogram))
    click.echo(f"wrote {output}" + (f" and {spectrogram}" if spectrogram else ""))


plugin = Plugin(
    name="audio",
    help="Music from MIDI notes by spectrogram diffusion; continue a piece segment by segment.",
    cli=cli,
    checkpoints=lambda: find_checkpoints(CHECKPOINTS),
    train=lambda config_path, overrides, **kw: _train(config_path, overrides, **kw),
    demo=lambda folder, device="cpu", seed=0: _demo(folder, device=device, seed=seed),
)


def _train(config_path, overrides, **kw):
    from .train import train

    return train(config_path, overrides, **kw)


def _demo(folder, device="cpu", seed=0):
    from .demo import demo

    return demo(folder, device=device, seed=seed)
