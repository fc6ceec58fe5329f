"""The serving image's Dockerfile: lint-clean, pinned, non-root, running the tested module."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.serving.server_process import SERVER_MODULE

IMAGE = Path(__file__).resolve().parents[2] / "serving_image"
LOCK = IMAGE.parent / "requirements" / "constraints.txt"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (IMAGE / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"{path.name}: {line!r} is not pinned with =="
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def test_entrypoint_is_the_module_the_tests_start() -> None:
    entrypoints = [args for name, args in _instructions() if name == "ENTRYPOINT"]
    assert [json.loads(e) for e in entrypoints] == [["python", "-m", SERVER_MODULE]]


def test_hadolint_passes(repo_root: Path) -> None:
    result = subprocess.run(
        [str(repo_root / ".venv" / "bin" / "hadolint"), str(IMAGE / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_image_is_pinned_and_user_is_not_root() -> None:
    instructions = _instructions()
    bases = [args for name, args in instructions if name == "FROM"]
    assert all(re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base) for base in bases), bases
    users = [args for name, args in instructions if name == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")


def test_every_installed_package_is_pinned_like_the_project_lock() -> None:
    image_pins = _pins(IMAGE / "constraints.txt")
    lock = _pins(LOCK)
    disagreeing = {
        name: (version, lock[name])
        for name, version in image_pins.items()
        if name in lock and lock[name] != version
    }
    assert not disagreeing, f"image pin vs project lock: {disagreeing}"
    for name, version in _pins(IMAGE / "requirements.txt").items():
        assert image_pins.get(name) == version, f"requirements.txt {name}=={version}"
    torch_install = re.search(r"torch==(\S+)", (IMAGE / "Dockerfile").read_text())
    assert torch_install and torch_install.group(1) == image_pins["torch"]


@pytest.mark.parametrize("copied", ["requirements.txt", "constraints.txt", "phi3_server/"])
def test_build_context_keeps_what_the_dockerfile_copies(copied: str) -> None:
    patterns = (IMAGE / ".dockerignore").read_text().splitlines()
    assert patterns[patterns.index("*") :].count(f"!{copied}") == 1
    assert (IMAGE / copied).exists()
