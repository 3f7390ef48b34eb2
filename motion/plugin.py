"""Registers the motion plugin with the polydiff CLI (entry-point group `polydiff.plugins`)."""

from pathlib import Path

import click
from polydiff.core.checkpoint import find_checkpoints
from polydiff.core.cli import common_options, output_option
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


# -- generation and editing ---------------------------------------------------------------------
def sampling_options(f):
    """--num-samples --sampler --steps --cfg --fps --checkpoint --no-foot-lock, shared by the generators."""
    opts = [
        click.option("--num-samples", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Motions to draw; several are written as NAME_0.ext, NAME_1.ext, ..."),
        click.option("--sampler", default="dpmpp_2m", show_default=True, help="Core sampler (euler, heun, ddim, unipc, ...)."),
        click.option("--steps", type=click.IntRange(min=1), default=20, show_default=True, help="Sampler steps."),
        click.option("--cfg", type=click.FloatRange(min=0), default=4.0, show_default=True,
                     help="Classifier-free guidance scale (1 = none)."),
        click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Frame rate of the output (default: the model's, 20)."),
        click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
                     help="Checkpoint folder (default: the shipped one)."),
        click.option("--no-foot-lock", is_flag=True, help="Skip the foot-lock clean-up at export."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _run(output, make, no_foot_lock):
    """Check the output name, make the motion, save it; user errors become one clear CLI message."""
    from polydiff.core.checkpoint import CheckpointError

    from .export import MotionFileError
    from .pipeline import MotionError, check_output

    try:
        check_output(output)   # before any sampling: a bad name fails at once and writes nothing
        paths = make().save(output, foot_lock=not no_foot_lock)
    except (MotionError, MotionFileError, CheckpointError) as err:
        raise click.UsageError(str(err)) from None
    for p in paths:
        click.echo(str(p))


def _sampling(kw):
    return {k: kw[k] for k in ("num_samples", "sampler", "steps", "cfg", "fps", "checkpoint")}


@cli.command("generate")
@click.argument("prompt")
@click.option("--seconds", type=float, default=6.0, show_default=True, help="Duration (over 9.8 s: chained windows).")
@output_option(required=True, help="Output file: .bvh, .glb, .gltf, .npz, .gif or .mp4 (by extension).")
@sampling_options
@common_options
def generate_cmd(prompt, seconds, output, device, seed, no_foot_lock, **kw):
    """Animate the skeleton from a sentence: `polydiff motion generate "a person walks forward then waves"`."""
    from .pipeline import generate

    _run(output, lambda: generate(prompt, seconds, seed=seed, device=device, **_sampling(kw)), no_foot_lock)


@cli.command("inbetween")
@click.argument("prompt")
@click.option("--prefix", type=click.Path(path_type=Path), default=None, help="Motion file that starts the result.")
@click.option("--suffix", type=click.Path(path_type=Path), default=None, help="Motion file that ends the result.")
@click.option("--keyframes", type=click.Path(path_type=Path), default=None,
              help="Motion file whose frames --frames are kept (at 20 fps).")
@click.option("--frames", default=None, help="Comma-separated frame indices of --keyframes to keep, e.g. 0,40,80.")
@click.option("--seconds", type=float, default=None, help="Duration of the result (default: the keyframe file's).")
@output_option(required=True, help="Output file: .bvh, .glb, .gltf, .npz, .gif or .mp4 (by extension).")
@sampling_options
@common_options
def inbetween_cmd(prompt, prefix, suffix, keyframes, frames, seconds, output, device, seed, no_foot_lock, **kw):
    """Fill in motion between a prefix, a suffix and/or keyframes, for a sentence."""
    from .pipeline import MotionError, inbetween

    try:
        idx = [int(v) for v in frames.split(",") if v.strip()] if frames else None
    except ValueError:
        raise click.UsageError(f"--frames must be comma-separated integers, got {frames!r}") from None
    if idx is not None and keyframes is None:
        raise click.UsageError("--frames needs --keyframes FILE")
    if keyframes is not None and idx is None:
        raise click.UsageError("--keyframes needs --frames, e.g. --frames 0,40,80")

    def make():
        if seconds is not None and not seconds > 0:
            raise MotionError(f"the duration must be a positive number of seconds, got {seconds}")
        return inbetween(prompt, prefix=prefix, suffix=suffix, keyframes=keyframes, keyframe_frames=idx,
                         seconds=seconds, seed=seed, device=device, **_sampling(kw))

    _run(output, make, no_foot_lock)


@cli.command("edit")
@click.argument("prompt")
@click.option("--source", type=click.Path(path_type=Path), required=True, help="Motion file to edit.")
@click.option("--part", type=click.Choice(["upper", "lower", "legs", "arms", "left_arm", "right_arm"]),
              default="upper", show_default=True, help="Body part to regenerate; the rest is kept exactly.")
@output_option(required=True, help="Output file: .bvh, .glb, .gltf, .npz, .gif or .mp4 (by extension).")
@sampling_options
@common_options
def edit_cmd(prompt, source, part, output, device, seed, no_foot_lock, **kw):
    """Regenerate one body part of a motion for a new sentence (e.g. a new upper body, legs kept)."""
    from .pipeline import regenerate

    _run(output, lambda: regenerate(prompt, source, part, seed=seed, device=device, **_sampling(kw)), no_foot_lock)


@cli.command("long")
@click.option("--segment", "segments", type=(str, float), multiple=True, required=True, metavar="PROMPT SECONDS",
              help="One segment; repeat: --segment \"a person walks forward\" 20 --segment \"someone jogs\" 30.")
@click.option("--transition", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Seconds of each window taken from the previous one (the smooth join).")
@output_option(required=True, help="Output file: .bvh, .glb, .gltf, .npz, .gif or .mp4 (by extension).")
@sampling_options
@common_options
def long_cmd(segments, transition, output, device, seed, no_foot_lock, **kw):
    """Chain several sentences into one long motion (any length, constant sampling memory)."""
    from .pipeline import generate_long

    _run(output, lambda: generate_long(list(segments), transition=transition, seed=seed, device=device,
                                       **_sampling(kw)), no_foot_lock)


def _train(config_path, overrides=(), **opts):
    from .train import train

    return train(config_path, overrides, **opts)


def _demo(folder, device="cpu", seed=0):
    from .demo import demo

    return demo(folder, device=device, seed=seed)


plugin = Plugin(
    name="motion",
    help="Animate the 22-joint SMPL/HumanML3D skeleton from a sentence; edit and export (BVH, glTF).",
    cli=cli,
    checkpoints=lambda: find_checkpoints(CHECKPOINTS),
    train=_train,
    demo=_demo,
)
