"""Reading a Dockerfile's instructions, for the image tests."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs in order, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def arguments(dockerfile: Path, name: str) -> list[str]:
    return [args for instruction, args in instructions(dockerfile) if instruction == name]


def conda_python(dockerfile: Path) -> tuple[int, int]:
    """The (major, minor) Python of the image's `conda create ... python=X.Y.Z`."""
    (create,) = [run for run in arguments(dockerfile, "RUN") if "conda create" in run]
    match = re.search(r"\bpython=(\d+)\.(\d+)\.\d+\b", create)
    assert match, create
    return int(match.group(1)), int(match.group(2))


def local_packages(context: Path, folders: tuple[str, ...]) -> dict[str, str]:
    """{distribution name: version} of the packages in `folders` of an image's build context
    (installed from the context, so named without a pin in its requirements)."""
    projects = (tomllib.loads((context / f / "pyproject.toml").read_text()) for f in folders)
    return {p["project"]["name"]: p["project"]["version"] for p in projects}
