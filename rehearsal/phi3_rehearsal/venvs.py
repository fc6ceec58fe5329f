"""Virtualenvs built from a deliverable's own requirement files, cached by the files' hash.

The dev venv installs every deliverable together, so it cannot show that one deliverable's
requirements install and work on their own. Such a venv lives in the repository's gitignored
build/ folder, named by a digest of its inputs, and is rebuilt only when they change; older
builds are removed.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD = REPO_ROOT / "build"
COMPLETE = ".complete"


def _digest(salt: str, inputs: Sequence[Path]) -> str:
    sha = hashlib.sha256(f"{salt}\n{sys.version_info[:2]}\n".encode())
    for path in inputs:
        sha.update(path.read_bytes())
    return sha.hexdigest()[:16]


def cached_venv(
    name: str, inputs: Sequence[Path], install: Callable[[Path], None], *, salt: str = ""
) -> Path:
    """build/<name>/<digest>: a fresh `python -m venv` that `install` filled, built on first use.

    `install` raises to refuse the build (the half-built venv is removed); `salt` is anything
    else the digest must depend on (a pin passed on the command line)."""
    cache = BUILD / name
    venv = cache / _digest(salt, inputs)
    cache.mkdir(parents=True, exist_ok=True)
    # Several pytest processes (or developers' sessions) may ask at once: one builds, all wait.
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / COMPLETE).exists():
            for stale in cache.iterdir():
                if stale.is_dir():
                    shutil.rmtree(stale)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            try:
                install(venv)
            except BaseException:
                shutil.rmtree(venv)
                raise
            (venv / COMPLETE).touch()
    return venv


def pip(venv: Path, arguments: Sequence[str], *, cwd: Path | None = None) -> None:
    """`pip <arguments>` with the venv's interpreter; a RuntimeError with pip's output if it
    fails. pip reads this machine's configuration (its wheel folders), so no resolve leaves it."""
    command = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    result = subprocess.run(
        [*command, *arguments], cwd=cwd, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"`pip {' '.join(arguments)}` failed:\n{(result.stdout + result.stderr)[-3000:]}"
        )
