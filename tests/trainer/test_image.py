"""The training image runs exactly the module the tests run, pinned, as a non-root user."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.trainer.helpers import TRAINER_MODULE


def instructions(dockerfile: Path, name: str) -> list[str]:
    return [
        line.split(maxsplit=1)[1]
        for line in dockerfile.read_text().splitlines()
        if line.upper().startswith(f"{name} ")
    ]


def pins(path: Path) -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return dict(line.lower().split("==", 1) for line in lines if line)


def test_entrypoint_is_the_module_the_tests_run(repo_root: Path) -> None:
    dockerfile = repo_root / "training_image" / "Dockerfile"
    (entrypoint,) = instructions(dockerfile, "ENTRYPOINT")
    assert json.loads(entrypoint) == ["python", "-m", TRAINER_MODULE]


def test_base_is_an_exact_cuda_runtime_tag_of_the_locked_torch(repo_root: Path) -> None:
    (base,) = instructions(repo_root / "training_image" / "Dockerfile", "FROM")
    match = re.fullmatch(
        r"pytorch/pytorch:(\d+\.\d+\.\d+)-cuda[\d.]+-cudnn\d+-runtime@sha256:[0-9a-f]{64}", base
    )
    assert match, base
    locked_torch = pins(repo_root / "requirements" / "constraints.txt")["torch"]
    assert locked_torch.split("+")[0] == match.group(1)


def test_runs_as_non_root(repo_root: Path) -> None:
    users = instructions(repo_root / "training_image" / "Dockerfile", "USER")
    assert users and users[-1].split(":")[0] not in ("0", "root")


def test_dependencies_are_pinned_to_the_lock_and_leave_torch_to_the_base(repo_root: Path) -> None:
    image = repo_root / "training_image"
    lock = pins(repo_root / "requirements" / "constraints.txt")
    for file in ("requirements.txt", "constraints.txt"):
        pinned = pins(image / file)
        assert "torch" not in pinned
        assert all(lock.get(name) == version for name, version in pinned.items()), file
    for line in (image / "requirements.txt").read_text().splitlines():
        assert line.startswith("#") or not line.strip() or "==" in line, line


def test_hadolint_passes_and_only_the_package_is_sent(repo_root: Path) -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    dockerfile = repo_root / "training_image" / "Dockerfile"
    proc = subprocess.run([str(hadolint), str(dockerfile)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ignore = (repo_root / "training_image" / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") :][:4] == [
        "*", "!requirements.txt", "!constraints.txt", "!phi3_trainer/"
    ]  # fmt: skip
