"""Registers the motion plugin with the polydiff CLI (entry-point group `polydiff.plugins`)."""

from pathlib import Path

import click

from polydiff.core.checkpoint import find_checkpoints
from polydiff.core.plugin import Plugin

CHECKPOINTS = Path(__file__).parent / "checkpoints"


@click.group(name="motion")
def cli():
    """Animate the 22-joint SMPL/HumanML3D skeleton from a sentence; edit and export (BVH, glTF)."""


plugin = Plugin(
    name="motion",
    help="Animate the 22-joint SMPL/HumanML3D skeleton from a sentence; edit and export (BVH, glTF).",
    cli=cli,
    checkpoints=lambda: find_checkpoints(CHECKPOINTS),
)
