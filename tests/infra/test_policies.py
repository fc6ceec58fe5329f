"""The security policy pack: each rule fails on a violating resource and passes on the program's."""

from __future__ import annotations

from typing import Any

import pytest

from phi3_infra.cli.plan import check_policies
from phi3_infra.tooling.offline import OfflineRun
from phi3_policy import POLICIES, check, validation_args

TAGS = {"project": "p", "stack": "s", "owner": "o", "expiresOn": "2027-01-31"}
GOOD_STORAGE = {
    "tags": TAGS,
    "allowSharedKeyAccess": False,
    "allowBlobPublicAccess": False,
    "enableHttpsTrafficOnly": True,
    "minimumTlsVersion": "TLS1_2",
}
GOOD_REGISTRY = {"tags": TAGS, "adminUserEnabled": False, "anonymousPullEnabled": False}
GOOD_VAULT = {
    "tags": TAGS,
    "properties": {"enableRbacAuthorization": True, "enableSoftDelete": True},
}
GOOD_HUB = {"tags": TAGS, "kind": "Hub", "systemDatastoresAuthMode": "Identity"}

STORAGE = "azure-native:storage:StorageAccount"
REGISTRY = "azure-native:containerregistry:Registry"
VAULT = "azure-native:keyvault:Vault"
WORKSPACE = "azure-native:machinelearningservices:Workspace"

VIOLATIONS = [
    ("acr-no-admin-user", REGISTRY, GOOD_REGISTRY | {"adminUserEnabled": True}),
    ("acr-no-admin-user", REGISTRY, GOOD_REGISTRY | {"anonymousPullEnabled": True}),
    ("storage-no-shared-key", STORAGE, GOOD_STORAGE | {"allowSharedKeyAccess": True}),
    ("storage-no-shared-key", STORAGE, GOOD_STORAGE | {"allowSharedKeyAccess": None}),
    ("storage-no-public-blob", STORAGE, GOOD_STORAGE | {"allowBlobPublicAccess": True}),
    ("storage-https-tls12", STORAGE, GOOD_STORAGE | {"minimumTlsVersion": "TLS1_0"}),
    ("storage-https-tls12", STORAGE, GOOD_STORAGE | {"enableHttpsTrafficOnly": False}),
    ("keyvault-rbac", VAULT, GOOD_VAULT | {"properties": {"enableSoftDelete": True}}),
    ("keyvault-rbac", VAULT, GOOD_VAULT | {"properties": {"enableRbacAuthorization": True}}),
    ("hub-identity-datastores", WORKSPACE, GOOD_HUB | {"systemDatastoresAuthMode": "AccessKey"}),
    ("required-tags", STORAGE, GOOD_STORAGE | {"tags": {"project": "p", "stack": "s"}}),
    ("required-tags", "azure-native:resources:ResourceGroup", {"location": "eastus2"}),
]  # fmt: skip


def _check(resource_type: str, props: dict[str, Any]) -> list[str]:
    urn = f"urn:pulumi:s::p::{resource_type}::r"
    return [
        violation.policy for violation in check(validation_args(resource_type, props, urn, "r"))
    ]


@pytest.mark.parametrize(("policy", "resource_type", "props"), VIOLATIONS)
def test_each_policy_fails_on_a_violating_resource(
    policy: str, resource_type: str, props: dict[str, Any]
) -> None:
    assert _check(resource_type, props) == [policy]


@pytest.mark.parametrize(
    ("resource_type", "props"),
    [
        (STORAGE, GOOD_STORAGE),
        (REGISTRY, GOOD_REGISTRY),
        (VAULT, GOOD_VAULT),
        (WORKSPACE, GOOD_HUB),
        (WORKSPACE, {"tags": TAGS, "kind": "Project"}),
        ("azure-native:authorization:RoleAssignment", {"principalType": "ServicePrincipal"}),
        ("phi3:infra:Foundation", {}),
    ],
)
def test_compliant_resources_pass(resource_type: str, props: dict[str, Any]) -> None:
    assert _check(resource_type, props) == []


def test_every_policy_has_a_violating_case() -> None:
    assert {policy.name for policy in POLICIES} == {policy for policy, _, _ in VIOLATIONS}


def test_violation_names_resource_and_setting() -> None:
    props = GOOD_REGISTRY | {"adminUserEnabled": True}
    (violation,) = check(validation_args(REGISTRY, props, "urn:x", "container-registry"))
    assert violation.urn == "urn:x"
    assert violation.message == "container-registry: adminUserEnabled must be False, got True"


def test_program_resources_pass_every_policy(example_runs: dict[str, OfflineRun]) -> None:
    for run in example_runs.values():
        assert check_policies(run) == []
