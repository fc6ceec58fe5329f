"""Azure's rules in the rehearsal (tests/fakes/azure_rules.py): the whole pipeline passes them,
and each one refuses what Azure refuses, so no plan in the suite can pass by the fake's silence."""

from __future__ import annotations

from typing import Any

import pytest

from phi3_infra.tooling.offline import LifecycleOptions, OfflineRun, PlannedResource
from tests.fakes.azure_rules import (
    COMPUTE,
    DATA_VERSION,
    JOB,
    ROLE_ASSIGNMENT,
    STORAGE_BLOB_DATA_CONTRIBUTOR,
    WORKSPACE,
    AzureRefusal,
    FakeAzure,
)
from tests.pipeline.conftest import Plan

GROUP = "/subscriptions/s/resourceGroups/rg"
STORAGE = f"{GROUP}/providers/Microsoft.Storage/storageAccounts/st"
HUB = f"{GROUP}/providers/Microsoft.MachineLearningServices/workspaces/hub"
PROJECT = f"{GROUP}/providers/Microsoft.MachineLearningServices/workspaces/project"
HUB_PRINCIPAL, PROJECT_PRINCIPAL = "hub-principal", "project-principal"
DATA = f"{PROJECT}/data/phi3-train/versions/1"
JOB_IDENTITY = f"{GROUP}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/workload"


def _resource(type_: str, arm_id: str, inputs: dict[str, Any], **outputs: Any) -> PlannedResource:
    name = arm_id.rsplit("/", 1)[-1]
    return PlannedResource(
        type=type_,
        name=name,
        urn=f"urn:{type_}::{name}",
        parent_urn="",
        custom=True,
        id=arm_id,
        inputs=inputs,
        outputs=outputs,
        options=LifecycleOptions(),
    )


def _run(*resources: PlannedResource) -> OfflineRun:
    return OfflineRun(resources=list(resources))


def _workspaces(*project_identities: str) -> tuple[PlannedResource, PlannedResource]:
    hub = _resource(
        WORKSPACE,
        HUB,
        {"kind": "Hub", "storageAccount": STORAGE},
        identity={"principalId": HUB_PRINCIPAL},
    )
    identity = {"type": "SystemAssigned,UserAssigned", "userAssignedIdentities": project_identities}
    project = _resource(
        WORKSPACE,
        PROJECT,
        {"kind": "Project", "hubResourceId": HUB, "identity": identity},
        identity={"principalId": PROJECT_PRINCIPAL},
    )
    return hub, project


WORKSPACES = _workspaces(JOB_IDENTITY)


def _assignment(principal: str) -> PlannedResource:
    return _resource(
        ROLE_ASSIGNMENT,
        f"{STORAGE}/providers/Microsoft.Authorization/roleAssignments/any-name",
        {
            "roleAssignmentName": "any-name",
            "roleDefinitionId": f"/subscriptions/s/providers/Microsoft.Authorization/"
            f"roleDefinitions/{STORAGE_BLOB_DATA_CONTRIBUTOR}",
            "principalId": principal,
            "scope": STORAGE,
        },
    )


CLUSTER = _resource(
    COMPUTE, f"{PROJECT}/computes/gpu", {"properties": {"computeType": "AmlCompute"}}
)


def _job(uri: str) -> PlannedResource:
    """A serverless command job (no computeId) running as JOB_IDENTITY."""
    properties = {
        "identity": {"identityType": "Managed", "resourceId": JOB_IDENTITY},
        "inputs": {"train": {"jobInputType": "uri_file", "uri": uri}},
    }
    return _resource(JOB, f"{PROJECT}/jobs/phi3-ft-1", {"properties": properties})


def _data(uri: str, tags: dict[str, str]) -> PlannedResource:
    return _resource(DATA_VERSION, DATA, {"properties": {"dataUri": uri, "tags": tags}})


@pytest.mark.parametrize(
    ("runs", "refusal"),
    [
        ([_run(*WORKSPACES, CLUSTER)], "not supported in a Project workspace"),
        ([_run(*WORKSPACES, _assignment(HUB_PRINCIPAL))], "409 RoleAssignmentExists"),
        ([_run(*WORKSPACES, _assignment(PROJECT_PRINCIPAL))], "409 RoleAssignmentExists"),
        ([_run(*WORKSPACES, _assignment("workload-principal"))], None),
        ([_run(*WORKSPACES, _job("azureml:phi3-train:1"))], "names a data version by its ARM id"),
        ([_run(*WORKSPACES, _job(DATA))], None),
        ([_run(*_workspaces(), _job(DATA))], "workspace does not hold"),
        (
            [_run(_data("https://st/a.jsonl", {"a": "1"})), _run(_data("https://st/a.jsonl", {}))],
            None,
        ),
        (
            [_run(_data("https://st/a.jsonl", {})), _run(_data("https://st/b.jsonl", {}))],
            "cannot change properties.dataUri of an existing DataVersion",
        ),
    ],
    ids=[
        "aml-compute-in-project",
        "hub-storage-role-again",
        "project-storage-role-again",
        "other-principal",
        "short-form-input",
        "arm-id-input",
        "job-identity-not-in-project",
        "data-version-tags",
        "data-version-uri",
    ],
)
def test_each_rule_refuses_what_azure_refuses(runs: list[OfflineRun], refusal: str | None) -> None:
    azure = FakeAzure()
    *earlier, last = runs
    for run in earlier:
        azure.apply(run)
    if refusal is None:
        azure.apply(last)
    else:
        with pytest.raises(AzureRefusal, match=refusal):
            azure.apply(last)


def test_the_whole_pipeline_is_sent_and_accepted(plan: Plan) -> None:
    azure = FakeAzure()
    run = plan(azure=azure, stages='["infra", "train", "serve"]')
    sent = {request.id for request in azure.requests if request.method == "PUT"}
    azure_native = [r for r in run.resources if r.type.startswith("azure-native:")]
    assert {str(r.id) for r in azure_native} == sent
