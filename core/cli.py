"""The `polydiff` command. Core commands live here; each plugin adds a group through entry points.

Every command is a thin shell over a Python function of the same name, so anything the CLI does a
notebook can do too.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import click

from .plugin import PluginError, load_plugin, load_plugins, plugin_entry_points

log = logging.getLogger("polydiff")

CORE_COMMANDS = ("info", "demo", "train", "distill")


# -- options shared by every command that computes something ------------------------------------
def device_option(f):
    return click.option("--device", default="auto", show_default=True,
                        help="cpu, cuda, cuda:N, mps, or auto (cuda > mps > cpu).")(f)


def seed_option(f):
    return click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True,
                        help="Random seed; a seeded run on the CPU is bit-for-bit reproducible.")(f)


def output_option(required: bool = True, help: str = "Output file."):
    return click.option("-o", "--output", type=click.Path(dir_okay=True, path_type=Path),
                        required=required, help=help)


def common_options(f):
    """--device and --seed; the wrapped function receives `device` as a resolved torch.device and the
    global RNGs already seeded."""

    @device_option
    @seed_option
    @functools.wraps(f)
    def wrapped(*args, device, seed, **kwargs):
        from .runtime import DeviceError, resolve_device, seed_everything

        try:
            dev = resolve_device(device)
        except DeviceError as err:
            raise click.UsageError(str(err)) from None
        seed_everything(seed)
        return f(*args, device=dev, seed=seed, **kwargs)

    return wrapped


def _broken_command(name: str, message: str) -> click.Command:
    def fail():
        raise click.ClickException(message)

    return click.Command(name, help=f"(broken plugin) {message}", callback=fail)


class PolydiffGroup(click.Group):
    """Core commands plus one group per plugin, loaded only when used."""

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(plugin_entry_points()))

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        if cmd is not None:
            return cmd
        ep = plugin_entry_points().get(name)
        if ep is None:
            return None
        try:
            plugin = load_plugin(ep)
        except PluginError as err:
            return _broken_command(name, str(err))
        if plugin.cli is None:
            return click.Command(name, help=plugin.help, callback=lambda: click.echo(plugin.help))
        plugin.cli.help = plugin.cli.help or plugin.help
        return plugin.cli


@click.group(cls=PolydiffGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress bars.")
@click.version_option(package_name="polydiff", prog_name="polydiff")
def cli(verbose: int, quiet: bool):
    """polydiff: one verified diffusion core; music, motion and 3D plugins.

    Run `polydiff info` to see what is installed, `polydiff demo -o OUT` for the tour.
    """
    from .progress import set_quiet

    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    logging.getLogger("polydiff").setLevel(level)
    set_quiet(quiet)


# -- info -------------------------------------------------------------------------------------
def info() -> dict:
    """Versions, device, threads, installed plugins and their shipped checkpoints."""
    import torch

    from .runtime import default_device

    def ver(pkg):
        try:
            return version(pkg)
        except PackageNotFoundError:
            return "not installed"

    plugins = {}
    for name, ep in sorted(plugin_entry_points().items()):
        try:
            p = load_plugin(ep)
            ckpts = {k: str(v) for k, v in (p.checkpoints() if p.checkpoints else {}).items()}
            plugins[name] = {"help": p.help, "checkpoints": ckpts}
        except PluginError as err:
            plugins[name] = {"error": str(err)}
    cuda = torch.cuda.is_available()
    return {
        "polydiff": ver("polydiff"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {p: ver(p) for p in ("torch", "torchaudio", "numpy", "safetensors", "accelerate",
                                          "transformers", "diffusers")},
        "default_device": str(default_device()),
        "cuda": torch.cuda.get_device_name(0) if cuda else None,
        "torch_threads": torch.get_num_threads(),
        "plugins": plugins,
    }


@cli.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def info_cmd(as_json: bool):
    """Versions, device, threads, plugins and their shipped checkpoints."""
    data = info()
    if as_json:
        import json

        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"polydiff {data['polydiff']}  (python {data['python']}, {data['platform']})")
    for k, v in data["packages"].items():
        click.echo(f"  {k:<13} {v}")
    click.echo(f"device: {data['default_device']}" + (f" ({data['cuda']})" if data["cuda"] else "")
               + f", torch threads: {data['torch_threads']}")
    if not data["plugins"]:
        click.echo("plugins: none installed")
    for name, p in data["plugins"].items():
        if "error" in p:
            click.echo(f"plugin {name}: BROKEN: {p['error']}")
            continue
        click.echo(f"plugin {name}: {p['help']}")
        for ck, path in p["checkpoints"].items() or {}:
            click.echo(f"    checkpoint {ck}: {path}")
        if not p["checkpoints"]:
            click.echo("    (no shipped checkpoints)")


# -- demo -------------------------------------------------------------------------------------
def demo(output: Path, device: str = "auto", seed: int = 0) -> Path | None:
    """Run every plugin's demo into `output/<plugin>/` and write `output/index.html` showing it all.

    A plugin's `demo(folder, device=, seed=)` returns the `polydiff.core.report.Artifact`s it wrote.
    Returns the page's path, or None when no plugin has a demo yet.
    """
    from .report import write_index

    output = Path(output)
    plugins = load_plugins()
    runnable = {n: p for n, p in plugins.items() if p.demo is not None}
    if not runnable:
        log.warning("No plugin provides a demo yet. Installed plugins: %s. Core commands: %s.",
                    ", ".join(plugins) or "none", ", ".join(CORE_COMMANDS))
        return None
    output.mkdir(parents=True, exist_ok=True)
    sections = {}
    for name, p in runnable.items():
        log.info("demo: %s", name)
        sections[f"{name}: {p.help}"] = list(p.demo(output / name, device=device, seed=seed))
    return write_index(output, sections, title="polydiff demo",
                       intro="Made by `polydiff demo` with the checkpoints shipped in the package.")


@cli.command("demo")
@output_option(required=False, help="Folder for the demo outputs (default: ./demo_out).")
@common_options
def demo_cmd(output, device, seed):
    """The tour: every plugin's shipped model on a short example, written to one folder."""
    page = demo(output or Path("demo_out"), device=device, seed=seed)
    if page is not None:
        click.echo(f"open {page.resolve().as_uri()}")


# -- train ------------------------------------------------------------------------------------
@cli.command("train", context_settings={"ignore_unknown_options": True})
@click.argument("plugin_name", metavar="PLUGIN")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Training config (YAML or JSON); key=value arguments override it.")
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
def train_cmd(plugin_name, config_path, overrides):
    """Train a plugin's model: `polydiff train motion --config cfg.yaml steps=2000 lr=1e-4`."""
    eps = plugin_entry_points()
    if plugin_name not in eps:
        raise click.UsageError(f"unknown plugin {plugin_name!r}; installed: {', '.join(sorted(eps)) or 'none'}")
    plugin = load_plugin(eps[plugin_name])
    if plugin.train is None:
        raise click.UsageError(f"plugin {plugin_name!r} has no training recipe")
    plugin.train(config_path, list(overrides))


from .distill_cli import register as _register_distill  # after common_options: register() uses it

_register_distill(cli)


def main(argv=None):
    """Console entry point; user-caused errors print one line (plus a hint) and exit 1."""
    from .checkpoint import CheckpointError

    try:
        cli.main(args=argv, prog_name="polydiff", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except Exception as e:
        user_errors = (CheckpointError, FileNotFoundError, ValueError, PluginError)
        train = sys.modules.get("polydiff.core.train")  # only a run that imported the trainer can diverge
        if train is not None:
            user_errors += (train.TrainingDiverged,)
        if not isinstance(e, user_errors) or os.environ.get("POLYDIFF_DEBUG"):
            raise
        click.echo(f"error: {e}", err=True)
        click.echo("(set POLYDIFF_DEBUG=1 for the full traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
