"""Registers the threed plugin with the polydiff CLI (entry-point group `polydiff.plugins`)."""

from pathlib import Path

import click
from polydiff.core.checkpoint import find_checkpoints
from polydiff.core.cli import common_options, output_option
from polydiff.core.plugin import Plugin

CHECKPOINTS = Path(__file__).parent / "checkpoints"


@click.group(name="threed")
def cli():
    """Text to coloured mesh by score distillation through a 2D image diffusion prior."""


@cli.command("build-data")
@output_option(required=True, help="Folder for the npz shards and manifest (use an ignored folder, e.g. data/threed).")
@click.option("--images", type=click.IntRange(min=1), default=20000, show_default=True,
              help="Number of captioned views to render.")
@click.option("--resolution", type=click.Choice(["32", "64"]), default="64", show_default=True)
@click.option("--split", type=click.Choice(["train", "heldout"]), default="train", show_default=True,
              help="Shape-colour pairs to draw from: training pairs or the held-out ones.")
@click.option("--views-per-scene", type=click.IntRange(min=1), default=4, show_default=True)
@common_options
def build_data_command(output, images, resolution, split, views_per_scene, device, seed):
    """Render multi-view captioned images of coloured primitives (training data for the image prior)."""
    from polydiff.core.progress import progress

    from .dataset import build_data
    from .io import OutputError

    try:
        files = build_data(output, images=images, resolution=int(resolution), seed=seed, split=split,
                           views_per_scene=views_per_scene,
                           progress_bar=lambda it: progress(it, desc=f"rendering {split} views"))
    except (OutputError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"wrote {len(files) - 1} shard(s) and a manifest under {output}")


plugin = Plugin(
    name="threed",
    help="Text to coloured mesh by score distillation through a 2D image diffusion prior.",
    cli=cli,
    checkpoints=lambda: find_checkpoints(CHECKPOINTS),
)
