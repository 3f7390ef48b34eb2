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


@cli.command("train-prior", context_settings={"ignore_unknown_options": True})
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), required=True,
              help="A run config, e.g. threed/configs/prior_small.yaml.")
@click.argument("overrides", nargs=-1)
def train_prior_command(config_path, overrides):
    """Train the built-in image prior: `polydiff threed train-prior --config FILE key=value ...`."""
    _train(config_path, list(overrides))


@cli.command("generate")
@click.argument("prompt")
@output_option(required=True, help="Mesh file to write: .glb, .obj or .ply (vertex colours).")
@click.option("--iters", type=click.IntRange(min=0), default=None, help="SDS iterations [default: Settings.iters].")
@click.option("--resolution", type=click.IntRange(min=8), default=None,
              help="Render size for a prior without a fixed one (ours renders at its training size).")
@click.option("--prior", "prior_dir", type=click.Path(file_okay=False), default=None,
              help="Prior folder: ours (config.json) or a diffusers Stable Diffusion folder; default: the shipped prior.")
@click.option("--cfg", "cfg_scale", type=float, default=None, help="Classifier-free guidance scale.")
@click.option("--negative", "negative_prompt", default=None, help="Negative prompt (unconditional branch).")
@click.option("--mesh-resolution", type=click.IntRange(min=16), default=None, help="Marching-cubes grid size.")
@click.option("--preview", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a turntable preview (.gif, or .png for a grid).")
@common_options
def generate_command(prompt, output, iters, resolution, prior_dir, cfg_scale, negative_prompt, mesh_resolution,
                     preview, device, seed):
    """Text to coloured mesh by score distillation: `polydiff threed generate "a red cube" -o cube.glb`."""
    from polydiff.core.checkpoint import CheckpointError

    from .io import OutputError, check_output_file
    from .mesh import MESH_SUFFIXES, PREVIEW_SUFFIXES, EmptyFieldError

    if not prompt.strip():
        raise click.BadParameter("the prompt is empty; describe the object, e.g. \"a red cube\"",
                                 param_hint="PROMPT")
    try:  # every output is checked before minutes of optimisation
        check_output_file(output, MESH_SUFFIXES)
        if preview is not None:
            check_output_file(preview, PREVIEW_SUFFIXES)
    except OutputError as err:
        raise click.ClickException(str(err)) from None
    from .generate import generate

    overrides = {k: v for k, v in (("iters", iters), ("resolution", resolution), ("cfg_scale", cfg_scale),
                                   ("negative_prompt", negative_prompt), ("mesh_resolution", mesh_resolution))
                 if v is not None}
    try:
        asset = generate(prompt, prior=prior_dir, seed=seed, device=device, **overrides)
        asset.save(output)
        if preview is not None:
            asset.turntable(preview)
    except (OutputError, EmptyFieldError, CheckpointError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    st = asset.stats
    click.echo(f"wrote {output} ({st['faces']} faces, {'watertight' if st['watertight'] else 'open'}; "
               f"{st['seconds_total']:.0f} s)" + (f" and {preview}" if preview is not None else ""))


def _train(config_path, overrides=(), **opts):
    from .train_prior import train

    return train(config_path, overrides, **opts)


def _demo(folder, device="cpu", seed: int = 0, **opts):
    from .demo import demo

    return demo(folder, device=device, seed=seed, **opts)


plugin = Plugin(
    name="threed",
    help="Text to coloured mesh by score distillation through a 2D image diffusion prior.",
    cli=cli,
    checkpoints=lambda: find_checkpoints(CHECKPOINTS),
    train=_train,
    demo=_demo,
)
