"""Registers the audio plugin with the polydiff CLI (entry-point group `polydiff.plugins`)."""

from pathlib import Path

import click
from polydiff.core.checkpoint import find_checkpoints
from polydiff.core.cli import output_option
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


plugin = Plugin(
    name="audio",
    help="Music from MIDI notes by spectrogram diffusion; continue a piece segment by segment.",
    cli=cli,
    checkpoints=lambda: find_checkpoints(CHECKPOINTS),
)
