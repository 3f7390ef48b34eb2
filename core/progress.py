"""One progress bar for everything long (sampling, training, data building, rendering).

`-q` on the command line (or `set_quiet(True)`) silences bars; they also stay silent when stderr is not
a terminal unless POLYDIFF_PROGRESS=1, so logs and CI output are not flooded.
"""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm

_QUIET = False


def set_quiet(quiet: bool) -> None:
    global _QUIET
    _QUIET = quiet


def enabled() -> bool:
    if _QUIET:
        return False
    if os.environ.get("POLYDIFF_PROGRESS") == "1":
        return True
    return sys.stderr.isatty()


def progress(iterable=None, desc: str | None = None, total: int | None = None, leave: bool = False, **kw):
    """`tqdm` with polydiff's defaults; use `bar.set_postfix(loss=...)` to show a running figure."""
    return tqdm(iterable, desc=desc, total=total, leave=leave, disable=not enabled(), dynamic_ncols=True, **kw)
