"""What a piece of the program imports, run in a fresh interpreter with nothing in its
environment: the packages it loads are the ones it needs where only its own requirements are
installed (`pulumi up`'s venv has no torch)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_and_list_modules(code: str, cwd: Path) -> tuple[list[str], set[str]]:
    """The lines `code` prints, and the top-level packages loaded once it has run."""
    listing = "; import sys as _s; print(' '.join(_s.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code + listing],
        env={"PATH": ""},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    *printed, modules = result.stdout.splitlines()
    return printed, {name.split(".")[0] for name in modules.split()}
