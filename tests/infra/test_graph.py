"""The whole resource graph of a stack, as `pulumi up` would register it."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from phi3_infra.cli.plan import plan_stack
from phi3_infra.components.rbac import BuiltInRole
from phi3_infra.tooling.offline import SUBSCRIPTION_ID, TENANT_ID, OfflineRun, PlannedResource
from tests.fakes.azure_rules import FakeAzure
from tests.imports import run_and_list_modules
from tests.infra.conftest import plan_in_azure

ROLE_ASSIGNMENT = "azure-native:authorization:RoleAssignment"
EXPECTED_GRAPH = {
    # (type, logical name): parent's logical name (None: the stack)
    ("phi3:infra:Foundation", "foundation"): None,
    ("phi3:infra:WorkloadIdentity", "workload-identity"): None,
    ("phi3:infra:FoundryWorkspace", "foundry"): None,
    ("azure-native:resources:ResourceGroup", "resource-group"): "foundation",
    ("pulumi-python:dynamic:Resource", "soft-delete-purge"): "foundation",
    ("pulumi-python:dynamic:Resource", "workspace-permanent-delete"): "foundry",
    ("pulumi-python:dynamic:Resource", "log-analytics-permanent-delete"): "foundation",
    ("azure-native:storage:StorageAccount", "storage"): "foundation",
    ("azure-native:keyvault:Vault", "key-vault"): "foundation",
    ("azure-native:containerregistry:Registry", "container-registry"): "foundation",
    ("azure-native:operationalinsights:Workspace", "log-analytics"): "foundation",
    ("azure-native:applicationinsights:Component", "app-insights"): "foundation",
    ("azure-native:managedidentity:UserAssignedIdentity", "identity"): "workload-identity",
    (ROLE_ASSIGNMENT, "workload-contributor"): "workload-identity",
    (ROLE_ASSIGNMENT, "workload-storage-blob-data-reader"): "workload-identity",
    (ROLE_ASSIGNMENT, "workload-acr-pull"): "workload-identity",
    ("azure-native:machinelearningservices:Workspace", "hub"): "foundry",
    ("azure-native:machinelearningservices:Workspace", "project"): "foundry",
}
# (principal's logical name, role, scope's logical name): every assignment and nothing else. The
# hub's and the project's own identities get theirs from the resource provider (workspace.py).
EXPECTED_ROLES = {
    ("identity", BuiltInRole.CONTRIBUTOR, "resource-group"),
    ("identity", BuiltInRole.STORAGE_BLOB_DATA_READER, "storage"),
    ("identity", BuiltInRole.ACR_PULL, "container-registry"),
}


def _principal_id(resource: PlannedResource) -> str:
    identity = resource.outputs.get("identity") or {}
    return str(resource.outputs.get("principalId") or identity["principalId"])


def test_graph_has_every_resource_under_its_component(eastus2: OfflineRun) -> None:
    by_urn = {resource.urn: resource.name for resource in eastus2.resources}
    graph = {
        (resource.type, resource.name): by_urn.get(resource.parent_urn)
        for resource in eastus2.resources
    }
    assert graph == EXPECTED_GRAPH
    assert len(eastus2.resources) == len(EXPECTED_GRAPH)


def test_every_azure_resource_is_in_the_stack_region_and_tagged(eastus2: OfflineRun) -> None:
    azure = [
        r
        for r in eastus2.resources
        if r.type.startswith("azure-native:") and r.type != ROLE_ASSIGNMENT
    ]
    assert {r.name for r in azure} == {
        name
        for kind, name in EXPECTED_GRAPH
        if kind.startswith("azure-native:") and kind != ROLE_ASSIGNMENT
    }
    for resource in azure:
        assert resource.inputs["location"] == "eastus2", resource.name
        assert resource.inputs["tags"] == {
            "project": "phi3-foundry",
            "stack": "eastus2",
            "owner": "ml-platform@contoso.com",
            "costCenter": "cc-4711",
            "expiresOn": "2027-03-31",
            "managedBy": "pulumi",
        }, resource.name


def test_storage_is_entra_only_https_tls12(eastus2: OfflineRun) -> None:
    storage = eastus2.named("storage").inputs
    assert storage["kind"] == "StorageV2"
    assert storage["enableHttpsTrafficOnly"] is True
    assert storage["minimumTlsVersion"] == "TLS1_2"
    assert storage["allowBlobPublicAccess"] is False
    assert storage["allowSharedKeyAccess"] is False
    assert storage["defaultToOAuthAuthentication"] is True


def test_key_vault_uses_rbac_and_soft_delete_without_purge_protection(eastus2: OfflineRun) -> None:
    vault = eastus2.named("key-vault").inputs["properties"]
    assert vault["tenantId"] == TENANT_ID
    assert vault["enableRbacAuthorization"] is True
    assert vault["enableSoftDelete"] is True
    assert vault["softDeleteRetentionInDays"] == 7
    # Azure rejects an explicit false: the key must be absent by default.
    assert "enablePurgeProtection" not in vault
    assert "accessPolicies" not in vault


def test_purge_protection_is_opt_in(example_config: Callable[[str], dict[str, str]]) -> None:
    config = example_config("eastus2") | {"phi3-foundry:keyVaultPurgeProtection": "true"}
    vault = plan_in_azure(config, "eastus2").named("key-vault").inputs["properties"]
    assert vault["enablePurgeProtection"] is True


def test_registry_has_no_admin_user_and_no_anonymous_pull(eastus2: OfflineRun) -> None:
    registry = eastus2.named("container-registry")
    assert registry.inputs["adminUserEnabled"] is False
    assert registry.inputs["anonymousPullEnabled"] is False


def test_app_insights_sends_to_log_analytics(eastus2: OfflineRun) -> None:
    insights = eastus2.named("app-insights").inputs
    assert insights["workspaceResourceId"] == eastus2.named("log-analytics").id
    assert insights["ingestionMode"] == "LogAnalytics"


def test_hub_is_attached_to_the_foundation_with_identity_datastores(eastus2: OfflineRun) -> None:
    hub = eastus2.named("hub").inputs
    assert hub["kind"] == "Hub"
    assert hub["storageAccount"] == eastus2.named("storage").id
    assert hub["keyVault"] == eastus2.named("key-vault").id
    assert hub["containerRegistry"] == eastus2.named("container-registry").id
    assert hub["applicationInsights"] == eastus2.named("app-insights").id
    assert hub["systemDatastoresAuthMode"] == "Identity"
    assert hub["identity"] == {"type": "SystemAssigned"}
    assert hub["resourceGroupName"] == eastus2.named("resource-group").azure_name


def test_project_belongs_to_the_hub_and_holds_the_job_identity(eastus2: OfflineRun) -> None:
    """Serverless jobs run as a user-assigned identity of the project; its system-assigned one
    stays the workspace's own (no primary user-assigned identity)."""
    project = eastus2.named("project").inputs
    assert project["kind"] == "Project"
    assert project["hubResourceId"] == eastus2.named("hub").id
    assert project["identity"] == {
        "type": "SystemAssigned,UserAssigned",
        "userAssignedIdentities": [eastus2.named("identity").id],
    }
    assert "primaryUserAssignedIdentity" not in project
    assert "storageAccount" not in project  # inherited from the hub


def test_role_assignments_are_exactly_the_expected_grants(eastus2: OfflineRun) -> None:
    by_principal = {_principal_id(r): r.name for r in eastus2.resources if r.name == "identity"}
    by_id = {r.id: r.name for r in eastus2.resources}
    grants = set()
    for assignment in eastus2.of_type(ROLE_ASSIGNMENT):
        inputs = assignment.inputs
        prefix = (
            f"/subscriptions/{SUBSCRIPTION_ID}/providers/Microsoft.Authorization/roleDefinitions/"
        )
        assert inputs["roleDefinitionId"].startswith(prefix)
        assert inputs["principalType"] == "ServicePrincipal"
        role = BuiltInRole(inputs["roleDefinitionId"].removeprefix(prefix))
        grants.add((by_principal[inputs["principalId"]], role, by_id[inputs["scope"]]))
    assert grants == EXPECTED_ROLES
    assert len(eastus2.of_type(ROLE_ASSIGNMENT)) == len(EXPECTED_ROLES)


def test_role_assignment_names_are_stable_and_unique_per_stack(
    example_runs: dict[str, OfflineRun], example_config: Callable[[str], dict[str, str]]
) -> None:
    def names(run: OfflineRun) -> dict[str, str]:
        return {a.name: a.inputs["roleAssignmentName"] for a in run.of_type(ROLE_ASSIGNMENT)}

    first = names(example_runs["eastus2"])
    assert all(uuid.UUID(value).version == 5 for value in first.values())
    assert len(set(first.values())) == len(first)
    assert names(plan_in_azure(example_config("eastus2"), "eastus2")) == first
    assert not set(first.values()) & set(names(example_runs["swedencentral"]).values())


def test_outputs_name_the_created_resources(eastus2: OfflineRun) -> None:
    identity = eastus2.named("identity").outputs
    assert eastus2.outputs == {
        "location": "eastus2",
        "resourceGroupName": eastus2.named("resource-group").azure_name,
        "resourceGroupId": eastus2.named("resource-group").id,
        "storageAccountName": eastus2.named("storage").azure_name,
        "keyVaultName": eastus2.named("key-vault").azure_name,
        "registryLoginServer": f"{eastus2.named('container-registry').azure_name}.azurecr.io",
        "hubName": eastus2.named("hub").azure_name,
        "hubId": eastus2.named("hub").id,
        "projectName": eastus2.named("project").azure_name,
        "projectId": eastus2.named("project").id,
        "identityId": eastus2.named("identity").id,
        "identityClientId": identity["clientId"],
        "identityPrincipalId": identity["principalId"],
        "stages": ["infra"],
        "gpuVmSize": "Standard_NC24ads_A100_v4",
    }


def test_the_workspaces_own_storage_grants_are_the_providers_alone(
    example_config: Callable[[str], dict[str, str]],
) -> None:
    """Azure assigns the hub's and the project's identities their storage roles itself; the
    program adding one of them is a 409 RoleAssignmentExists (tests/fakes/azure_rules.py)."""
    azure = FakeAzure()
    run = azure.apply(plan_stack(example_config("eastus2"), "eastus2"))
    for name in ("hub", "project"):
        principal = run.named(name).outputs["identity"]["principalId"]
        held = [a["properties"] for a in azure.role_assignments()]
        assert [p["scope"] for p in held if p["principalId"] == principal] == [
            run.named("storage").id
        ], name
        assert not [a for a in run.of_type(ROLE_ASSIGNMENT) if a.inputs["principalId"] == principal]


@pytest.mark.parametrize("stack", ["eastus2", "swedencentral"])
def test_each_example_stack_plans_in_its_region(
    example_runs: dict[str, OfflineRun], stack: str
) -> None:
    run = example_runs[stack]
    assert run.outputs["location"] == stack
    assert run.named("resource-group").inputs["location"] == stack
    assert stack in run.outputs["resourceGroupName"]


def test_program_does_not_import_the_training_or_serving_stack(repo_root: Path) -> None:
    """`pulumi up` installs infra/requirements.txt only: the program must not need more."""
    _, loaded = run_and_list_modules("import phi3_infra.program", repo_root)
    assert {"pulumi", "pulumi_azure_native", "pydantic", "phi3_training_rules"} <= loaded
    heavy = {"torch", "transformers", "trl", "peft", "fastapi", "pulumi_policy"}
    assert not loaded & (heavy | {"phi3_trainer", "phi3_server", "phi3_rehearsal", "phi3_policy"})
