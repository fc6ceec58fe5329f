"""The training image: an Azure ML job image that runs the tested module with the locked pins."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from phi3_infra.build_context import context_files
from phi3_infra.components.training import trainer_command
from phi3_rehearsal.images import IMAGES
from tests.dockerfiles import arguments, conda_python, local_packages
from tests.trainer.helpers import TRAINER_MODULE

IMAGE = Path(__file__).resolve().parents[2] / "training_image"
DOCKERFILE = IMAGE / "Dockerfile"
LOCK = IMAGE.parent / "requirements" / "constraints.txt"
# Named without a pin: the Dockerfile installs them from the build context.
LOCAL = local_packages(IMAGE, IMAGES["trainer"].local_packages)


def pins(path: Path) -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return dict(line.lower().split("==", 1) for line in lines if line and line not in LOCAL)


def test_the_job_command_runs_the_tested_module_and_the_image_does_not_wrap_it() -> None:
    # Azure ML starts the job's command in the container; an ENTRYPOINT would get it as arguments.
    command = trainer_command(["train"], "microsoft/Phi-3-mini-4k-instruct", {})
    assert shlex.split(command)[:3] == ["python", "-m", TRAINER_MODULE]
    assert arguments(DOCKERFILE, "ENTRYPOINT") == []
    assert arguments(DOCKERFILE, "CMD") == []


def test_runs_as_the_root_user_azure_ml_job_images_keep() -> None:
    # Azure ML prepares the job inside the container; its base images stay root for that.
    assert arguments(DOCKERFILE, "USER") == []


def test_base_is_an_azure_ml_image_on_mcr_with_the_cuda_of_the_installed_torch() -> None:
    (base,) = arguments(DOCKERFILE, "FROM")
    match = re.fullmatch(
        r"mcr\.microsoft\.com/azureml/openmpi[\d.]+-cuda(\d+)\.(\d+)-ubuntu[\d.]+"
        r"(?::(?P<tag>\d{8}\.v\d+))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?",
        base,
    )
    assert match and (match["tag"] or match["digest"]), f"not a pinned Azure ML base: {base}"
    cuda = f"cu{match.group(1)}{match.group(2)}"
    text = DOCKERFILE.read_text()
    torch = re.search(r"\btorch==(\d+\.\d+\.\d+)\+(cu\d+)", text)
    assert torch, "the Dockerfile must pin torch's CUDA build"
    assert torch.group(1) == pins(LOCK)["torch"].split("+")[0]
    assert torch.group(2) == cuda
    assert f"https://download.pytorch.org/whl/{cuda}" in text


def test_python_is_the_one_the_tests_run() -> None:
    assert conda_python(DOCKERFILE) == sys.version_info[:2]


def test_dependencies_are_pinned_to_the_lock_and_torch_to_the_dockerfile() -> None:
    lock = pins(LOCK)
    for file in ("requirements.txt", "constraints.txt"):
        pinned = pins(IMAGE / file)
        assert "torch" not in pinned
        assert all(lock.get(name) == version for name, version in pinned.items()), file
    for line in (IMAGE / "requirements.txt").read_text().splitlines():
        assert line.startswith("#") or not line.strip() or "==" in line or line in LOCAL, line
    assert LOCAL == {"phi3-training-rules": "0.1.0"}


def test_hadolint_passes_and_only_the_package_is_sent() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    proc = subprocess.run([str(hadolint), str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ignore = (IMAGE / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") :][:6] == [
        "*", "!requirements.txt", "!constraints.txt", "!phi3_trainer/",
        "!rules/pyproject.toml", "!rules/phi3_training_rules/",
    ]  # fmt: skip


def test_the_build_context_sends_the_rules_package_and_not_the_developer_tools() -> None:
    # What `docker build` (and the image's content tag, which names the training job) sees.
    sent = context_files(IMAGE)
    assert {"rules/pyproject.toml", "rules/phi3_training_rules/memory.py"} <= set(sent)
    assert "phi3_trainer/train.py" in sent
    tools = {"phi3_trainer/prepare_data.py", "phi3_trainer/flag_table.py"}
    assert not tools & set(sent)
    assert not [path for path in sent if ".egg-info" in path or path.startswith("rules/build/")]
