"""A plain (non-editable) build: the wheel carries the polydiff.* namespace, entry points and package
data, and no generic top-level `core` / `audio` module."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_layout(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(ROOT)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("polydiff-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("polydiff/core/cli.py", "polydiff/core/checkpoint.py", "polydiff/audio/plugin.py",
                   "polydiff/motion/plugin.py", "polydiff/threed/plugin.py"):
        assert module in names, f"{module} missing from the wheel"
    tops = {n.split("/")[0] for n in names}
    assert not tops & {"core", "audio", "motion", "threed", "tests", "benchmarks"}, tops
    shipped = [p.relative_to(ROOT).as_posix() for p in ROOT.glob("*/checkpoints/*/*") if p.is_file()]
    for p in shipped:  # every shipped checkpoint file travels in the wheel
        assert "polydiff/" + p in names, f"package data {p} missing from the wheel"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[polydiff.plugins]" in text and "polydiff = polydiff.core.cli:main" in text
