"""The internet-facing endpoint runs as its own identity, with only what a managed online
deployment needs: pull its image, read its model (concept-endpoints-online-auth.md)."""

from __future__ import annotations

import pytest

from phi3_infra.components.rbac import BuiltInRole
from phi3_infra.tooling.offline import OfflineRun, PlannedResource
from tests.pipeline.conftest import Plan
from tests.pipeline.serving_plan import served_deployment

ROLE_ASSIGNMENT = "azure-native:authorization:RoleAssignment"


@pytest.fixture(scope="module")
def run(full_run: OfflineRun) -> OfflineRun:
    return full_run


def _grants(run: OfflineRun, identity: PlannedResource) -> set[tuple[BuiltInRole, str]]:
    by_id = {resource.id: resource.name for resource in run.resources}
    return {
        (BuiltInRole(a.inputs["roleDefinitionId"].rsplit("/", 1)[-1]), by_id[a.inputs["scope"]])
        for a in run.of_type(ROLE_ASSIGNMENT)
        if a.inputs["principalId"] == identity.outputs["principalId"]
    }


def test_the_endpoint_does_not_run_as_the_training_identity(run: OfflineRun) -> None:
    (user_identity,) = run.named("online-endpoint").inputs["identity"]["userAssignedIdentities"]
    assert user_identity == run.named("endpoint-identity").id
    assert user_identity != run.named("identity").id
    # Training keeps its identity and grants (Contributor stays off the endpoint).
    assert _grants(run, run.named("identity")) == {
        (BuiltInRole.CONTRIBUTOR, "resource-group"),
        (BuiltInRole.STORAGE_BLOB_DATA_READER, "storage"),
        (BuiltInRole.ACR_PULL, "container-registry"),
        (BuiltInRole.STORAGE_BLOB_DATA_CONTRIBUTOR, "storage"),  # the job writes its outputs
    }


def test_the_endpoint_identity_can_pull_its_image_and_read_its_model_and_nothing_else(
    run: OfflineRun,
) -> None:
    assert _grants(run, run.named("endpoint-identity")) == {
        (BuiltInRole.ACR_PULL, "container-registry"),
        (BuiltInRole.STORAGE_BLOB_DATA_READER, "storage"),
    }


@pytest.mark.parametrize("grant", ["endpoint-acr-pull", "endpoint-storage-blob-data-reader"])
def test_the_deployment_waits_for_the_endpoint_identitys_grants(
    run: OfflineRun, grant: str
) -> None:
    assert run.waits_for(served_deployment(run).name, grant)


def test_serving_a_referenced_model_also_runs_as_the_endpoint_identity(plan: Plan) -> None:
    run = plan(stages='["infra", "serve"]', trainingData=None, modelReference="azureml:phi3-ft:7")
    assert _grants(run, run.named("endpoint-identity")) == {
        (BuiltInRole.ACR_PULL, "container-registry"),
        (BuiltInRole.STORAGE_BLOB_DATA_READER, "storage"),
    }
    assert not [r for r in run.resources if r.name == "workload-storage-blob-data-contributor"]
