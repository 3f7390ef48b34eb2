"""`polydiff distill PLUGIN --teacher DIR -o DIR`: the CLI shell over `polydiff.core.distill.distill`.

A plugin opts in through its generic hook, `Plugin.extra["distill"]`: a callable

    load_teacher(folder: Path, device: torch.device) -> polydiff.core.distill.Teacher

returning the teacher's precond wrapper (loaded from `folder`), one sample's shape, the sampling
sigma range of its generate command and, if it is conditional, a sampler of training conditions and the
null condition for CFG. The output folder is a checkpoint of the teacher's own class, so the plugin's
generate command loads it like any other and `--steps 1` runs the one-step student (with the grid
recorded in config.json under "distilled" for a few-step student).

The core CLI mounts the command with `register(cli)` (core/cli.py belongs to the lead).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click


def distill_plugin(plugin_name: str, teacher: Path, output: Path, config_path: Path | None = None,
                   overrides=(), device="cpu", seed: int = 0) -> Path:
    """Load `plugin_name`'s teacher from `teacher` through its `extra["distill"]` hook and distil it into
    `output`; returns the student checkpoint folder."""
    from .config import load_config
    from .distill import DistillRun, Teacher, distill
    from .plugin import load_plugin, plugin_entry_points

    eps = plugin_entry_points()
    if plugin_name not in eps:
        raise click.UsageError(f"unknown plugin {plugin_name!r}; installed: {', '.join(sorted(eps)) or 'none'}")
    plugin = load_plugin(eps[plugin_name])
    hook = plugin.extra.get("distill")
    if hook is None:
        raise click.UsageError(f"plugin {plugin_name!r} does not support distillation (it sets no "
                               "extra['distill'] teacher loader)")
    spec = hook(Path(teacher), device=device)
    if not isinstance(spec, Teacher):
        raise TypeError(f"plugin {plugin_name!r}: extra['distill'] must return a polydiff.core.distill.Teacher, "
                        f"got {type(spec).__name__}")
    run = load_config(DistillRun, config_path, list(overrides))
    run = replace(run, train=replace(run.train, device=str(device), seed=seed))
    folder, _ = distill(spec, output, run)
    return folder


def register(group: click.Group) -> click.Command:
    """Add `distill` to the core click group (`register(cli)` in core/cli.py)."""
    from .cli import common_options, output_option

    @group.command("distill", context_settings={"ignore_unknown_options": True})
    @click.argument("plugin_name", metavar="PLUGIN")
    @click.option("--teacher", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
                  help="The teacher checkpoint folder (the plugin's model).")
    @output_option(required=True, help="Folder for the student checkpoint (the run itself goes in DIR/dmd-run).")
    @click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                  help="Distillation config (YAML/JSON: dmd.* and train.* keys); key=value arguments override it.")
    @click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
    @common_options
    def distill_cmd(plugin_name, teacher, output, config_path, overrides, device, seed):
        """One-step generator by DMD: `polydiff distill motion --teacher ckpt -o student dmd.steps=1`."""
        folder = distill_plugin(plugin_name, teacher, output, config_path, overrides, device=device, seed=seed)
        click.echo(f"student: {folder} (sample it with --steps 1)")

    return distill_cmd
