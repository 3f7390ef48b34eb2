"""Registers the motion plugin with the polydiff CLI (entry-point group `polydiff.plugins`)."""

from pathlib import Path

import click

from polydiff.core.checkpoint import find_checkpoints
from polydiff.core.cli import output_option
from polydiff.core.plugin import Plugin

CHECKPOINTS = Path(__file__).parent / "checkpoints"


@click.group(name="motion")
def cli():
    """Animate the 22-joint SMPL/HumanML3D skeleton from a sentence; edit and export (BVH, glTF)."""


@cli.command("build-data")
@output_option(required=True, help="Folder to write, in the HumanML3D layout.")
@click.option("--clips", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Number of procedural clips (each one to three actions, at most 9.8 s).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Corpus seed; the same seed and clip count give the same files.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
def build_data_cmd(output, clips, seed, overwrite):
    """Build the procedural text-motion corpus (features, joints, captions, attribute labels)."""
    from polydiff.core.progress import progress

    from .corpus import CorpusError, build_data

    try:
        out = build_data(output, clips=clips, seed=seed, overwrite=overwrite, progress=progress)
    except CorpusError as err:
        raise click.UsageError(str(err)) from None
    click.echo(str(out))


plugin = Plugin(
    name="motion",
    help="Animate the 22-joint SMPL/HumanML3D skeleton from a sentence; edit and export (BVH, glTF).",
    cli=cli,
    checkpoints=lambda: find_checkpoints(CHECKPOINTS),
)
