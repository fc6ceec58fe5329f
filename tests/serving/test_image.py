"""The serving image's Dockerfile: lint-clean, pinned, non-root, running the tested module."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from phi3_server.settings import Settings
from tests.dockerfiles import arguments, conda_python
from tests.serving.server_process import SERVER_MODULE

IMAGE = Path(__file__).resolve().parents[2] / "serving_image"
DOCKERFILE = IMAGE / "Dockerfile"
LOCK = IMAGE.parent / "requirements" / "constraints.txt"


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"{path.name}: {line!r} is not pinned with =="
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def test_entrypoint_is_the_module_the_tests_start() -> None:
    entrypoints = arguments(DOCKERFILE, "ENTRYPOINT")
    assert [json.loads(e) for e in entrypoints] == [["python", "-m", SERVER_MODULE]]


def test_hadolint_passes(repo_root: Path) -> None:
    result = subprocess.run(
        [str(repo_root / ".venv" / "bin" / "hadolint"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_is_azure_mls_inference_image_on_mcr_pinned_by_digest() -> None:
    # Docker Hub's anonymous pulls from ACR Tasks are rate-limited; MCR's are not.
    (base,) = arguments(DOCKERFILE, "FROM")
    assert re.fullmatch(
        r"mcr\.microsoft\.com/azureml/minimal-py\d+-inference(?::[\w.-]+)?@sha256:[0-9a-f]{64}",
        base,
    ), base


def test_runs_as_a_numeric_non_root_user() -> None:
    users = arguments(DOCKERFILE, "USER")
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0", users


def test_python_is_the_one_the_tests_run() -> None:
    assert conda_python(DOCKERFILE) == sys.version_info[:2]


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
    torch_install = re.search(r"torch==(\S+)", DOCKERFILE.read_text())
    assert torch_install and torch_install.group(1) == image_pins["torch"]


def test_cuda_variant_pins_the_cpu_variants_packages_and_torchs_cuda_build() -> None:
    cpu, cuda = _pins(IMAGE / "constraints.txt"), _pins(IMAGE / "constraints-cuda.txt")
    assert cuda["torch"] == cpu["torch"].removesuffix("+cpu") != cpu["torch"]
    shared = {name: version for name, version in cpu.items() if name != "torch"}
    assert {name: cuda.get(name) for name in shared} == shared
    extra = set(cuda) - set(cpu)
    assert extra and all(
        name.startswith(("nvidia-", "cuda-", "triton", "setuptools")) for name in extra
    ), extra
    assert f"torch=={cuda['torch']} -r requirements.txt -c constraints-cuda.txt" in (
        DOCKERFILE.read_text()
    )


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_each_image_variant_names_a_device_the_server_accepts(variant: str) -> None:
    text = DOCKERFILE.read_text()
    assert "ARG TORCH_VARIANT=cpu" in text and "PHI3_SERVER_DEVICE=$TORCH_VARIANT" in text
    assert f'"$TORCH_VARIANT" = {variant}' in text
    assert Settings.model_validate({"device": variant}).device == variant


@pytest.mark.parametrize(
    "copied", ["requirements.txt", "constraints.txt", "constraints-cuda.txt", "phi3_server/"]
)
def test_build_context_keeps_what_the_dockerfile_copies(copied: str) -> None:
    patterns = (IMAGE / ".dockerignore").read_text().splitlines()
    assert patterns[patterns.index("*") :].count(f"!{copied}") == 1
    assert (IMAGE / copied).exists()
