"""The order `pulumi up` creates things in (and `pulumi destroy` reverses), as the program
declares it: through data flow or explicit `depends_on`, recorded from the registrations."""

from __future__ import annotations

import pytest

from phi3_infra.offline import OfflineRun

WORKLOAD_ROLES = ("workload-contributor", "workload-storage-blob-data-reader", "workload-acr-pull")


@pytest.fixture
def run(full_run: OfflineRun) -> OfflineRun:
    return full_run


@pytest.mark.parametrize("role", WORKLOAD_ROLES)
def test_workload_roles_exist_before_the_cluster_and_the_job(run: OfflineRun, role: str) -> None:
    assert run.waits_for("gpu-cluster-amlcompute", role)
    assert run.waits_for("training-job", role)


@pytest.mark.parametrize(
    "earlier",
    [
        "trainer-image",  # the build has pushed the image
        "trainer-environment",
        "train-data-upload",  # the blob is there
        "train-data",  # the data asset version
        "gpu-cluster-amlcompute",
        "project-storage-blob-data-contributor",  # the project writes the job's outputs
    ],
)
def test_the_job_comes_after_images_data_and_compute(run: OfflineRun, earlier: str) -> None:
    assert run.waits_for("training-job", earlier)


def test_the_data_upload_waits_for_the_uploaders_role(run: OfflineRun) -> None:
    assert run.waits_for("train-data-upload", "deployer-storage-blob-data-contributor")
    assert run.waits_for("train-data-upload", "data-container")


def test_model_after_the_completed_job_and_deployment_after_the_model(run: OfflineRun) -> None:
    assert run.waits_for("training-job-completion", "training-job")
    assert run.waits_for("model", "training-job-completion")
    assert run.waits_for("online-deployment", "model")
    assert run.waits_for("online-deployment", "server-image")
    assert run.waits_for("online-deployment", "online-endpoint")
    assert run.waits_for("endpoint-traffic", "online-deployment")


def test_the_endpoint_does_not_wait_for_its_deployment(run: OfflineRun) -> None:
    """Traffic is set by its own resource: no endpoint <-> deployment cycle."""
    assert not run.waits_for("online-endpoint", "online-deployment")
    assert "traffic" not in run.named("online-endpoint").inputs["properties"]


@pytest.mark.parametrize("purged", ["key-vault", "hub", "project"])
def test_soft_deletable_resources_come_after_their_purge(run: OfflineRun, purged: str) -> None:
    """So `pulumi destroy` deletes them first and purges them when the purge resource goes."""
    assert run.waits_for(purged, "soft-delete-purge")
    assert not run.waits_for("soft-delete-purge", purged)


def test_the_purge_runs_before_the_resource_group_is_deleted(run: OfflineRun) -> None:
    assert run.waits_for("soft-delete-purge", "resource-group")
