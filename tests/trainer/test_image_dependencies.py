"""The trainer image's own dependency set: complete, consistent, and able to log to Azure ML.

These run in a venv built from training_image/requirements.txt and constraints.txt alone (plus
torch, as in the image: phi3_rehearsal.images), not in the dev venv, which installs every
deliverable together.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

import phi3_rehearsal
from phi3_rehearsal.images import IMAGES, image_env
from tests.dockerfiles import local_packages

PROBE = Path(phi3_rehearsal.__file__).with_name("mlflow_store_probe.py")
# The form of the tracking URI Azure ML gives a job (MicrosoftDocs/azure-ai-docs
# articles/machine-learning/includes/machine-learning-mlflow-configure-tracking.md, "Manually").
REGION, GROUP, WORKSPACE = "eastus2", "rg", "ws"
SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
TRACKING_URI = (
    f"azureml://{REGION}.api.azureml.ms/mlflow/v1.0/subscriptions/{SUBSCRIPTION}"
    f"/resourceGroups/{GROUP}/providers/Microsoft.MachineLearningServices/workspaces/{WORKSPACE}"
)


def _unsigned_jwt(expires_in_s: int) -> str:
    """A token shaped like the job's: azureml-mlflow reads its `exp` without verifying it."""

    def part(value: Mapping[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    header, claims = {"alg": "HS256", "typ": "JWT"}, {"exp": int(time.time()) + expires_in_s}
    return f"{part(header)}.{part(claims)}.c2ln"


def _pins(path: Path) -> dict[str, str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return {
        name.lower().replace("_", "-"): version
        for name, _, version in (line.partition("==") for line in lines if line)
    }


@pytest.fixture(scope="module")
def python() -> Path:
    return image_env("trainer").python


def test_an_azure_ml_tracking_uri_resolves_to_azure_ml_stores_offline(python: Path) -> None:
    # What a job run has: azureml-mlflow takes its token path when these four are set
    # (azureml-mlflow 1.62.0.post6, azureml/mlflow/_internal/service_context_loader.py,
    # `_mlflow_env_vars_set`), and the trainer turns MLflow on when the URI is set.
    env = {
        "PATH": os.environ.get("PATH", ""),
        "MLFLOW_TRACKING_URI": TRACKING_URI,
        "MLFLOW_TRACKING_TOKEN": _unsigned_jwt(3600),
        "MLFLOW_RUN_ID": "phi3-ft-probe",
        "MLFLOW_EXPERIMENT_NAME": "phi3-fine-tuning",
    }
    result = subprocess.run(
        [str(python), str(PROBE)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stores = json.loads(result.stdout.strip().splitlines()[-1])
    workspace_path = (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}"
        f"/providers/Microsoft.MachineLearningServices/workspaces/{WORKSPACE}"
    )
    for role in ("tracking", "registry"):
        assert stores[role]["store"].startswith("azureml.mlflow."), stores
        # Logs and models go to the job's own workspace, through its region's endpoint.
        assert stores[role]["host"].startswith(f"https://{REGION}.api.azureml.ms/mlflow/"), stores
        assert stores[role]["host"].endswith(workspace_path), stores


def test_the_image_installs_exactly_its_pins_and_they_agree(python: Path) -> None:
    check = subprocess.run(
        [str(python), "-m", "pip", "check"], capture_output=True, text=True, timeout=120
    )
    assert check.returncode == 0, check.stdout + check.stderr
    listing = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    installed = {
        package["name"].lower().replace("_", "-"): package["version"]
        for package in json.loads(listing.stdout)
    }
    # pip and setuptools come with the venv, torch from the image's own pinned install.
    for unpinned in ("pip", "setuptools", "torch"):
        installed.pop(unpinned, None)
    image = IMAGES["trainer"]
    requirements, constraints = image.requirements
    # The packages of the build context (the rules the program shares), at their own versions.
    local = local_packages(image.folder, image.local_packages)
    assert {name: installed.pop(name, None) for name in local} == local
    assert installed == _pins(constraints)
    assert {
        k: v for k, v in _pins(requirements).items() if k not in local
    }.items() <= installed.items()
