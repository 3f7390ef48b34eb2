"""Registers the audio plugin with the polydiff CLI (entry-point group `polydiff.plugins`)."""

from pathlib import Path

import click

from polydiff.core.checkpoint import find_checkpoints
from polydiff.core.plugin import Plugin

CHECKPOINTS = Path(__file__).parent / "checkpoints"


@click.group(name="audio")
def cli():
    """Music from MIDI notes by spectrogram diffusion; continue a piece segment by segment."""


plugin = Plugin(
    name="audio",
    help="Music from MIDI notes by spectrogram diffusion; continue a piece segment by segment.",
    cli=cli,
    checkpoints=lambda: find_checkpoints(CHECKPOINTS),
)
