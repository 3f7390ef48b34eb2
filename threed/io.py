"""Output paths the user names: checked up front with a clear error, written atomically.

A file is written to a temporary file in the same folder and moved into place with os.replace, so an
interrupted or failed write never leaves a half-written output.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from polydiff.core.runtime import atomic_write  # noqa: F401  (threed code imports it from here)


class OutputError(OSError):
    """An output path cannot be written; the message says what to change."""


def check_output_dir(out_dir) -> Path:
    """Create `out_dir` if needed and prove it is writable."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir} exists and is not a folder; choose another output folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir):
            pass
    except OSError as err:
        raise OutputError(f"cannot write to {out_dir} ({err.strerror or err}); choose a writable output folder") from None
    return out_dir


def check_output_file(path, suffixes: tuple[str, ...]) -> Path:
    """A writable file path with one of `suffixes` (lower case, with the dot). Creates nothing but the
    parent folder."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name such as {path / ('out' + suffixes[0])}")
    if path.suffix.lower() not in suffixes:
        raise OutputError(f"{path}: unsupported file type {path.suffix or '(none)'!r}; use one of {', '.join(suffixes)}")
    check_output_dir(path.parent if str(path.parent) else Path("."))
    return path


