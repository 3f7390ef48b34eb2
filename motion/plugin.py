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
@click.option(
    "--clips",
    type=click.IntRange(min=1),
    default=2000,
    show_default=True,
    help="Number of procedural clips (each one to three actions, at most 9.8 s).",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Corpus seed; the same seed and clip count give the same files.",
)
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


@cli.command("convert")
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@output_option(required=True, help="Output file: .bvh, .glb, .gltf, .npz, .gif or .mp4 (by extension).")
@click.option("--fps", type=float, default=None, help="Frame rate (default: the source's, else 20).")
@click.option("--no-foot-lock", is_flag=True, help="Skip the foot-lock clean-up before BVH / glTF export.")
@click.option(
    "--smpl",
    "smpl_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder with SMPL model files: write SMPL parameters and meshes to the .npz output.",
)
@click.option(
    "--gender", type=click.Choice(["neutral", "male", "female"]), default="neutral", show_default=True
)
def convert_cmd(source, output, fps, no_foot_lock, smpl_dir, gender):
    """Convert a motion file (.npz, .npy joints or 263-dim features, .bvh) to another format."""
    from .export import MotionFileError, load_motion, save_motion
    from .smpl import SMPLError, export_smpl

    try:
        joints, src_fps = load_motion(source)
        if smpl_dir is not None:
            out = export_smpl(output, joints, smpl_dir, gender=gender, fps=fps or src_fps)
        else:
            out = save_motion(output, joints, fps=fps or src_fps, clean_feet=not no_foot_lock)
    except (MotionFileError, SMPLError) as err:
        raise click.UsageError(str(err)) from None
    click.echo(str(out))


def _train(config_path, overrides=(), **opts):
    from .train import train

    return train(config_path, overrides, **opts)


plugin = Plugin(
    name="motion",
    help="Animate the 22-joint SMPL/HumanML3D skeleton from a sentence; edit and export (BVH, glTF).",
    cli=cli,
    checkpoints=lambda: find_checkpoints(CHECKPOINTS),
    train=_train,
)
