"""Registers the threed plugin with the polydiff CLI (entry-point group `polydiff.plugins`)."""

from pathlib import Path

import click

from polydiff.core.checkpoint import find_checkpoints
from polydiff.core.plugin import Plugin

CHECKPOINTS = Path(__file__).parent / "checkpoints"


@click.group(name="threed")
def cli():
    """Text to coloured mesh by score distillation through a 2D image diffusion prior."""


plugin = Plugin(
    name="threed",
    help="Text to coloured mesh by score distillation through a 2D image diffusion prior.",
    cli=cli,
    checkpoints=lambda: find_checkpoints(CHECKPOINTS),
)
