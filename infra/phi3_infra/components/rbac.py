"""Built-in Azure roles and role assignments with names known at plan time."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

import pulumi
from pulumi_azure_native import authorization

# Fixed namespace so assignment names stay stable across runs, machines and stacks.
_ASSIGNMENT_NAMESPACE = uuid.UUID("5b0f3c2e-7d8a-4e61-9a51-2f3c6d0b9e47")


class BuiltInRole(StrEnum):
    """Built-in role definition GUIDs (the same in every tenant)."""

    CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
    STORAGE_BLOB_DATA_READER = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
    STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
    ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
    ACR_PUSH = "8311e382-0749-4cb8-b61a-304f252e45ec"


def assignment_name(scope_name: str, role: BuiltInRole, principal_role: str) -> str:
    """uuid5 of what the assignment means, so a re-run addresses the same assignment.

    ARM ids are unknown at plan time, so the scope is identified by its deterministic Azure name
    (which already carries the stack's hash) and the principal by its role in this stack.
    """
    return str(uuid.uuid5(_ASSIGNMENT_NAMESPACE, f"{scope_name}|{role.value}|{principal_role}"))


def role_definition_id(subscription_id: pulumi.Input[str], role: BuiltInRole) -> pulumi.Output[str]:
    return pulumi.Output.concat(
        "/subscriptions/",
        subscription_id,
        "/providers/Microsoft.Authorization/roleDefinitions/",
        role.value,
    )


def assign_role(
    *,
    scope_name: str,
    scope_id: pulumi.Input[str],
    role: BuiltInRole,
    principal_role: str,
    principal_id: pulumi.Input[str],
    subscription_id: pulumi.Input[str],
    parent: pulumi.Resource,
    principal_type: authorization.PrincipalType = authorization.PrincipalType.SERVICE_PRINCIPAL,
) -> authorization.RoleAssignment:
    """Assign `role` on `scope_id` to a principal: a managed identity's service principal unless
    `principal_type` says otherwise (the deploying user)."""
    return authorization.RoleAssignment(
        f"{principal_role}-{role.name.lower().replace('_', '-')}",
        role_assignment_name=assignment_name(scope_name, role, principal_role),
        scope=scope_id,
        role_definition_id=role_definition_id(subscription_id, role),
        principal_id=principal_id,
        # A fresh identity may not have replicated yet; the type lets ARM skip the directory lookup.
        principal_type=principal_type,
        opts=pulumi.ResourceOptions(parent=parent),
    )


@dataclass(frozen=True)
class Deployer:
    """Whoever runs `pulumi up`: some steps (data upload, local image push) act as them."""

    object_id: pulumi.Input[str]
    principal_type: authorization.PrincipalType
    subscription_id: pulumi.Input[str]


def assign_to_deployer(
    *,
    scope_name: str,
    scope_id: pulumi.Input[str],
    role: BuiltInRole,
    deployer: Deployer,
    parent: pulumi.Resource,
) -> authorization.RoleAssignment:
    return assign_role(
        scope_name=scope_name,
        scope_id=scope_id,
        role=role,
        principal_role="deployer",
        principal_id=deployer.object_id,
        subscription_id=deployer.subscription_id,
        parent=parent,
        principal_type=deployer.principal_type,
    )
