"""The training job's name is a hash of its inputs: it changes exactly when one of them does, so
an unchanged `pulumi up` trains nothing and a changed one starts a new run.

Most cases call the program's own `check_inputs` + `training_inputs` (config, real context hashes,
real data validation; no Pulumi run); the graph-level tests plan the stack."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from phi3_infra.components.rbac import BuiltInRole
from phi3_infra.config import config_from_flat
from phi3_infra.naming import stack_names
from phi3_infra.program import check_inputs, training_inputs
from phi3_infra.stack_files import PROJECT
from phi3_infra.tooling.offline import SUBSCRIPTION_ID, OfflineRun
from tests.pipeline.conftest import BASE_CONFIG, STACK, Plan

JOB = "azure-native:machinelearningservices:Job"
JobName = Callable[..., str]


def _job(run: OfflineRun) -> tuple[str, dict[str, Any]]:
    (job,) = run.of_type(JOB)
    return job.inputs["id"], job.inputs["properties"]


@pytest.fixture
def job_name(plan: Plan, tmp_path: Path) -> JobName:
    """The job name the program derives for config overrides, over tmp_path's contexts/data."""

    def name(**overrides: str) -> str:
        flat = BASE_CONFIG | {"phi3-foundry:trainingData": str(tmp_path / "train.jsonl")}
        flat |= {f"phi3-foundry:{key}": value for key, value in overrides.items()}
        config = config_from_flat(flat)
        names = stack_names(config, PROJECT, STACK, SUBSCRIPTION_ID)
        return training_inputs(check_inputs(config, names, SUBSCRIPTION_ID)).job_name

    return name


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def test_the_planned_job_is_the_derived_one_and_stable(plan: Plan, job_name: JobName) -> None:
    first, second = _job(plan(stages='["infra", "train"]'))[0], _job(plan())[0]
    assert first == second == job_name()
    assert first.startswith("phi3-ft-")


@pytest.mark.parametrize(
    ("path", "overrides"),
    [
        ("training_image/phi3_trainer/__init__.py", {}),
        ("training_image/Dockerfile", {}),
        ("train.jsonl", {}),
        (None, {"trainerArgs": '{"num_train_epochs": 2}'}),
        (None, {"baseModel": "microsoft/Phi-3.5-mini-instruct"}),
        (None, {"trainingNodes": "2"}),
        (None, {"gpuSkus": '["Standard_NC48ads_A100_v4"]'}),
    ],
    ids=["trainer-code", "trainer-dockerfile", "data", "args", "base-model", "nodes", "vm-size"],
)
def test_a_changed_input_gives_a_new_job(
    job_name: JobName, tmp_path: Path, path: str | None, overrides: dict[str, str]
) -> None:
    before = job_name()
    if path == "train.jsonl":
        first_record = (tmp_path / path).read_text().splitlines(keepends=True)[0]
        _append(tmp_path / path, first_record)
    elif path is not None:
        _append(tmp_path / path, "\n# changed\n")
    assert job_name(**overrides) != before


def test_validation_data_is_an_input(job_name: JobName, tmp_path: Path) -> None:
    validation = tmp_path / "validation.jsonl"
    validation.write_text((tmp_path / "train.jsonl").read_text().splitlines()[0] + "\n")
    assert job_name(validationData=str(validation)) != job_name()


def test_what_does_not_change_the_model_keeps_the_job(job_name: JobName, tmp_path: Path) -> None:
    before = job_name()
    _append(tmp_path / "serving_image/phi3_server/__init__.py", "# server change\n")
    _append(tmp_path / "training_image/notes.txt", "excluded by .dockerignore\n")
    (tmp_path / "training_image/phi3_trainer/__pycache__").mkdir()
    (tmp_path / "training_image/phi3_trainer/__pycache__/x.pyc").write_bytes(b"\0")
    unrelated = {
        "owner": "someone-else@contoso.com",
        "servingInstanceType": "Standard_E8s_v3",
        "requestTimeoutSeconds": "120",
        "trainingTimeoutMinutes": "60",
        "endpointAuthMode": "aadToken",
    }
    assert job_name(**unrelated) == before


def test_changed_data_is_a_new_blob_and_asset_version(plan: Plan, tmp_path: Path) -> None:
    before = plan(stages='["infra", "train"]')
    _append(tmp_path / "train.jsonl", (tmp_path / "train.jsonl").read_text().splitlines()[0])
    after = plan(stages='["infra", "train"]')
    assert _job(after)[0] != _job(before)[0]
    for name, key in (("train-data", "version"), ("train-data-upload", "url")):
        assert after.named(name).inputs[key] != before.named(name).inputs[key]


def test_the_job_runs_the_trainer_serverless_as_the_workload_identity(
    full_run: OfflineRun,
) -> None:
    name, properties = _job(full_run)
    assert properties["jobType"] == "Command"
    # Serverless compute: no computeId, the size and tier in resources / queueSettings.
    assert "computeId" not in properties
    assert properties["resources"] == {
        "instanceType": "Standard_NC24ads_A100_v4",
        "instanceCount": 1,
        "shmSize": "16g",
    }
    assert properties["queueSettings"] == {"jobTier": "Standard"}
    assert properties["environmentId"] == full_run.named("trainer-environment").id
    identity = full_run.named("identity")
    assert properties["identity"] == {
        "identityType": "Managed",
        "clientId": identity.outputs["clientId"],
        "resourceId": identity.id,
    }
    assert properties["inputs"] == {
        "train": {
            "jobInputType": "uri_file",
            "mode": "ReadOnlyMount",
            # The data version's ARM id, as the azure-ai-ml SDK sends it.
            "uri": full_run.named("train-data").id,
        }
    }
    assert properties["outputs"] == {
        "model": {"jobOutputType": "uri_folder", "mode": "ReadWriteMount"}
    }
    assert str(properties["command"]).startswith(
        "python -m phi3_trainer --train_file ${{inputs.train}} "
        "--model_name_or_path microsoft/Phi-3-mini-4k-instruct --output_dir ${{outputs.model}}"
    )
    assert "distribution" not in properties  # one node, one GPU
    model = full_run.named("model").inputs
    assert model["name"] == name
    assert model["properties"]["modelUri"] == f"azureml://jobs/{name}/outputs/model/paths/merged/"


def test_the_workload_identity_may_write_the_jobs_outputs(full_run: OfflineRun) -> None:
    """The job rw-mounts `outputs.model` as its own identity: Blob Data Contributor on the
    storage account, granted by the training component and in place before the job."""
    grant = full_run.named("workload-storage-blob-data-contributor")
    assert grant.parent_urn == full_run.named("training").urn
    assert grant.inputs["scope"] == full_run.named("storage").id
    assert grant.inputs["principalId"] == full_run.named("identity").outputs["principalId"]
    assert grant.inputs["roleDefinitionId"].endswith(BuiltInRole.STORAGE_BLOB_DATA_CONTRIBUTOR)
    assert full_run.waits_for("training-job", "workload-storage-blob-data-contributor")


def test_only_stacks_that_train_let_the_workload_identity_write_storage(plan: Plan) -> None:
    run = plan(stages='["infra", "serve"]', trainingData=None, modelReference="azureml:phi3-ft:7")
    assert not [r for r in run.resources if r.name == "workload-storage-blob-data-contributor"]


def test_several_gpus_or_nodes_run_pytorch_distributed(plan: Plan) -> None:
    _, properties = _job(
        plan(
            stages='["infra", "train"]',
            gpuSkus='["Standard_NC48ads_A100_v4"]',
            trainingNodes="2",
            lowPriority="true",
            trainerArgs='{"use_lora": false, "learning_rate": 1e-05}',
        )
    )
    assert properties["distribution"] == {
        "distributionType": "PyTorch",
        "processCountPerInstance": 2,
    }
    assert properties["resources"] == {
        "instanceType": "Standard_NC48ads_A100_v4",
        "instanceCount": 2,
        "shmSize": "16g",
    }
    assert properties["queueSettings"] == {"jobTier": "Spot"}
    assert str(properties["command"]).endswith("--use_lora false --learning_rate 1e-05")


def test_the_project_holds_the_identity_the_job_runs_as(full_run: OfflineRun) -> None:
    """Serverless jobs run as a user-assigned identity of their workspace, never its
    system-assigned one (how-to-use-serverless-compute.md)."""
    _, properties = _job(full_run)
    project_identity = full_run.named("project").inputs["identity"]
    assert project_identity["type"] == "SystemAssigned,UserAssigned"
    assert project_identity["userAssignedIdentities"] == [properties["identity"]["resourceId"]]
