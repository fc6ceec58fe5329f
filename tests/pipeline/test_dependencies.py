"""The order `pulumi up` creates things in (and `pulumi destroy` reverses), as the program
declares it: through data flow or explicit `depends_on`, recorded from the registrations."""

from __future__ import annotations

import pytest

from phi3_infra.tooling.offline import OfflineRun
from tests.pipeline.serving_plan import rollout_check, served_deployment

WORKLOAD_ROLES = ("workload-contributor", "workload-storage-blob-data-reader", "workload-acr-pull")


@pytest.fixture
def run(full_run: OfflineRun) -> OfflineRun:
    return full_run


@pytest.mark.parametrize("role", WORKLOAD_ROLES)
def test_workload_roles_exist_before_the_job(run: OfflineRun, role: str) -> None:
    assert run.waits_for("training-job", role)


@pytest.mark.parametrize(
    "earlier",
    [
        "trainer-image",  # the build has pushed the image
        "trainer-environment",
        "train-data-upload",  # the blob is there
        "train-data",  # the data asset version
        "project",  # the job runs as the identity the project holds
        "workload-storage-blob-data-contributor",  # the job writes its outputs as it
    ],
)
def test_the_job_comes_after_images_data_and_roles(run: OfflineRun, earlier: str) -> None:
    assert run.waits_for("training-job", earlier)


def test_the_data_upload_waits_for_the_uploaders_role(run: OfflineRun) -> None:
    assert run.waits_for("train-data-upload", "deployer-storage-blob-data-contributor")
    assert run.waits_for("train-data-upload", "data-container")


def test_model_after_the_completed_job_and_deployment_after_the_model(run: OfflineRun) -> None:
    deployment = served_deployment(run).name
    assert run.waits_for("training-job-completion", "training-job")
    assert run.waits_for("model", "training-job-completion")
    assert run.waits_for(deployment, "model")
    assert run.waits_for(deployment, "server-image")
    assert run.waits_for(deployment, "online-endpoint")
    assert run.waits_for(rollout_check(run).name, deployment)
    assert run.waits_for("endpoint-traffic", rollout_check(run).name)


def test_the_endpoint_does_not_wait_for_its_deployment(run: OfflineRun) -> None:
    """Traffic is set by its own resource: no endpoint <-> deployment cycle."""
    assert not run.waits_for("online-endpoint", served_deployment(run).name)
    assert "traffic" not in run.named("online-endpoint").inputs["properties"]


def test_the_vault_comes_after_its_purge(run: OfflineRun) -> None:
    """So `pulumi destroy` deletes the vault first and purges it when the purge resource goes."""
    assert run.waits_for("key-vault", "soft-delete-purge")
    assert not run.waits_for("soft-delete-purge", "key-vault")


@pytest.mark.parametrize("workspace", ["hub", "project"])
def test_workspaces_come_after_their_permanent_delete(run: OfflineRun, workspace: str) -> None:
    """Pulumi only forgets the workspaces (retained on delete); the step they depend on deletes
    them with forceToPurge when it goes, after everything inside them is gone."""
    assert run.waits_for(workspace, "workspace-permanent-delete")
    assert not run.waits_for("workspace-permanent-delete", workspace)


def test_the_purge_runs_before_the_resource_group_is_deleted(run: OfflineRun) -> None:
    assert run.waits_for("soft-delete-purge", "resource-group")


def test_destroy_cancels_the_job_before_deleting_it(run: OfflineRun) -> None:
    """The cancellation step depends on the job, so `pulumi destroy` deletes it (stopping a
    running job and waiting for its end) before the job and its workspace."""
    cancellation = run.named("training-job-cancellation")
    assert run.waits_for("training-job-cancellation", "training-job")
    assert cancellation.inputs["job_id"] == run.named("training-job").id
