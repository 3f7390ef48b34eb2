"""Modality plugins, found through the `polydiff.plugins` entry-point group.

A plugin package declares, in its pyproject:

    [project.entry-points."polydiff.plugins"]
    audio = "polydiff.audio.plugin:plugin"

where the object is a `Plugin` (or a zero-argument callable returning one). Core never imports a
plugin by name: the CLI lists entry points, and loads a plugin only when one of its commands runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Callable

import click

GROUP = "polydiff.plugins"
log = logging.getLogger("polydiff")


@dataclass
class Plugin:
    """What a modality contributes.

    name: the sub-command (`polydiff <name> ...`).
    cli: a click group with the plugin's commands.
    checkpoints: callable returning {name: folder} of the checkpoints shipped with the plugin.
    train: callable(config_path, overrides, **opts) for `polydiff train <name>`.
    demo: callable(folder: Path, device=, seed=) -> list of `polydiff.core.report.Artifact`s it wrote,
        shown on the `polydiff demo` results page.
    """

    name: str
    help: str
    cli: click.Group | None = None
    checkpoints: Callable[[], dict[str, Path]] | None = None
    train: Callable | None = None
    demo: Callable | None = None
    extra: dict = field(default_factory=dict)


class PluginError(RuntimeError):
    """A plugin failed to load or is not a `Plugin`."""


def plugin_entry_points() -> dict[str, EntryPoint]:
    """Name -> entry point, without importing anything."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def load_plugin(ep: EntryPoint) -> Plugin:
    try:
        obj = ep.load()
    except Exception as err:  # a broken third-party plugin must not take the CLI down
        raise PluginError(f"plugin {ep.name!r} ({ep.value}) failed to import: {err}") from err
    if callable(obj) and not isinstance(obj, Plugin):
        obj = obj()
    if not isinstance(obj, Plugin):
        raise PluginError(f"plugin {ep.name!r} ({ep.value}) is a {type(obj).__name__}, not a polydiff Plugin")
    return obj


def load_plugins() -> dict[str, Plugin]:
    """Every plugin that loads; failures are logged, not raised."""
    out = {}
    for name, ep in sorted(plugin_entry_points().items()):
        try:
            out[name] = load_plugin(ep)
        except PluginError as err:
            log.warning("%s", err)
    return out
