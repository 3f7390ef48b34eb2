"""The `polydiff` CLI: help, info, plugins found through entry points, seeded reproducibility."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

PLUGIN_SRC = textwrap.dedent('''
    import click
    import torch
    from polydiff.core.cli import common_options
    from polydiff.core.plugin import Plugin

    @click.group()
    def cli():
        """A dummy modality for tests."""

    @cli.command()
    @common_options
    def noise(device, seed):
        """Print four seeded normal numbers."""
        click.echo(" ".join(f"{v:.17g}" for v in torch.randn(4, device=device).tolist()))

    plugin = Plugin(name="dummy", help="A dummy modality for tests.", cli=cli,
                    checkpoints=lambda: {"tiny": "/nowhere/tiny"})
''')


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
    """A folder that, on PYTHONPATH, makes two plugins visible through `polydiff.plugins` entry points:
    a working `dummy` and a `broken` one whose module does not import."""
    site = tmp_path_factory.mktemp("site")
    (site / "dummy_polydiff_plugin.py").write_text(PLUGIN_SRC)
    (site / "broken_polydiff_plugin.py").write_text("raise ImportError('needs a package that is missing')\n")
    dist = site / "dummy_polydiff_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: dummy-polydiff-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[polydiff.plugins]\ndummy = dummy_polydiff_plugin:plugin\nbroken = broken_polydiff_plugin:plugin\n"
    )
    return site


def run(args, plugin_path=None, check=True):
    env = dict(os.environ)
    if plugin_path is not None:
        env["PYTHONPATH"] = str(plugin_path) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "polydiff.core.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"polydiff {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def test_help_lists_core_and_entry_point_plugins(plugin_path):
    out = run(["--help"], plugin_path).stdout
    for name in ("info", "demo", "train", "dummy", "audio", "motion", "threed"):
        assert f"\n  {name} " in out, f"{name} missing from --help:\n{out}"
    assert "A dummy modality for tests." in out


def test_info_reports_plugins_checkpoints_and_broken_ones(plugin_path):
    data = json.loads(run(["info", "--json"], plugin_path).stdout)
    assert data["plugins"]["dummy"]["checkpoints"] == {"tiny": "/nowhere/tiny"}
    assert "needs a package that is missing" in data["plugins"]["broken"]["error"]
    assert data["packages"]["torch"] != "not installed" and data["torch_threads"] >= 1
    assert data["default_device"] in ("cpu", "cuda", "mps")


def test_seeded_run_is_bitwise_reproducible(plugin_path):
    a = run(["dummy", "noise", "--seed", "7", "--device", "cpu"], plugin_path).stdout
    b = run(["dummy", "noise", "--seed", "7", "--device", "cpu"], plugin_path).stdout
    c = run(["dummy", "noise", "--seed", "8", "--device", "cpu"], plugin_path).stdout
    assert a == b and a != c and len(a.split()) == 4


def test_unavailable_device_is_one_clear_error(plugin_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = run(["dummy", "noise", "--device", "cuda"], plugin_path, check=False)
    assert proc.returncode == 2
    assert "CUDA is not available here; use --device cpu" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_broken_plugin_command_fails_cleanly(plugin_path):
    proc = run(["broken"], plugin_path, check=False)
    assert proc.returncode == 1 and "failed to import" in proc.stderr and "Traceback" not in proc.stderr


def test_train_unknown_plugin_is_a_usage_error():
    proc = run(["train", "nosuch"], check=False)
    assert proc.returncode == 2 and "unknown plugin 'nosuch'" in proc.stderr


def test_console_script_is_installed():
    exe = os.path.join(os.path.dirname(sys.executable), "polydiff")
    assert os.path.exists(exe), "the polydiff console entry point is not installed in this environment"
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "polydiff" in proc.stdout
