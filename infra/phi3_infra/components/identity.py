"""User-assigned managed identities, each with exactly the roles its workload needs.

Two identities, so the internet-facing endpoint never holds what training needs:

- the workload identity: serverless training jobs run as it (attached to the project, see
  workspace.py); Contributor on the resource group, Storage Blob Data Reader on the storage account
  and AcrPull on the registry (the training stage adds the output writer grant, see training.py);
- the endpoint identity: the online deployment pulls its image and reads its model as it;
  AcrPull on the registry and Storage Blob Data Reader on the storage account. A system-assigned
  endpoint identity gets exactly these two automatically; a user-assigned one gets none, "you're
  also responsible for assigning proper roles" (MicrosoftDocs/azure-ai-docs
  articles/machine-learning/concept-endpoints-online-auth.md, "Automatic role assignment for
  endpoint identity"; Azure/azureml-examples
  cli/deploy-managed-online-endpoint-access-resource-uai.sh grants a user-assigned endpoint
  identity the same two).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
from pulumi_azure_native import machinelearningservices as ml
from pulumi_azure_native import managedidentity

from phi3_infra.components.rbac import BuiltInRole, assign_role

WORKLOAD_PRINCIPAL = "workload"
ENDPOINT_PRINCIPAL = "endpoint"


@dataclass(frozen=True)
class Grant:
    """One built-in role on one scope."""

    scope_name: str  # the scope's deterministic Azure name, for the assignment's name
    scope_id: pulumi.Input[str]
    role: BuiltInRole


@dataclass(frozen=True)
class IdentityArgs:
    azure_name: str
    principal_role: str  # what the identity is in this stack: names its role assignments
    resource_group_name: pulumi.Input[str]
    location: pulumi.Input[str]
    grants: Sequence[Grant]
    subscription_id: pulumi.Input[str]
    tags: Mapping[str, str]


class _IdentityWithGrants(pulumi.ComponentResource):
    """A user-assigned identity and its role assignments; ids out."""

    identity: managedidentity.UserAssignedIdentity
    role_assignments: list[pulumi.Resource]

    def __init__(
        self,
        type_name: str,
        name: str,
        args: IdentityArgs,
        identity_name: str,
        opts: pulumi.ResourceOptions | None,
    ) -> None:
        super().__init__(type_name, name, None, opts)
        self.identity = managedidentity.UserAssignedIdentity(
            identity_name,
            resource_name_=args.azure_name,
            resource_group_name=args.resource_group_name,
            location=args.location,
            tags=dict(args.tags),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.role_assignments = [
            assign_role(
                scope_name=grant.scope_name,
                scope_id=grant.scope_id,
                role=grant.role,
                principal_role=args.principal_role,
                principal_id=self.identity.principal_id,
                subscription_id=args.subscription_id,
                parent=self,
            )
            for grant in args.grants
        ]
        self.register_outputs(
            {
                "identityId": self.identity.id,
                "clientId": self.identity.client_id,
                "principalId": self.identity.principal_id,
            }
        )


class WorkloadIdentity(_IdentityWithGrants):
    """The identity serverless training jobs run as."""

    def __init__(
        self, name: str, args: IdentityArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("phi3:infra:WorkloadIdentity", name, args, "identity", opts)


class EndpointIdentity(_IdentityWithGrants):
    """The identity the online endpoint's deployment runs as."""

    def __init__(
        self, name: str, args: IdentityArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("phi3:serving:EndpointIdentity", name, args, "endpoint-identity", opts)


def workload_grants(
    *,
    resource_group: tuple[str, pulumi.Input[str]],
    storage_account: tuple[str, pulumi.Input[str]],
    container_registry: tuple[str, pulumi.Input[str]],
) -> list[Grant]:
    """(Azure name, ARM id) of each scope -> the workload identity's three grants."""
    return [
        # Manage jobs and read workspace resources in the environment's resource group.
        Grant(*resource_group, BuiltInRole.CONTRIBUTOR),
        # Read training data and base models from the hub's storage.
        Grant(*storage_account, BuiltInRole.STORAGE_BLOB_DATA_READER),
        # Pull the trainer image without registry admin credentials.
        Grant(*container_registry, BuiltInRole.ACR_PULL),
    ]


def endpoint_grants(
    *,
    storage_account: tuple[str, pulumi.Input[str]],
    container_registry: tuple[str, pulumi.Input[str]],
) -> list[Grant]:
    """What a managed online deployment needs to pull its image and read its model, nothing else
    (concept-endpoints-online-auth.md, see the module docstring)."""
    return [
        Grant(*container_registry, BuiltInRole.ACR_PULL),
        Grant(*storage_account, BuiltInRole.STORAGE_BLOB_DATA_READER),
    ]


def runs_as(identity_id: pulumi.Input[str]) -> ml.ManagedServiceIdentityArgs:
    """The identity block of an Azure ML resource that runs as one user-assigned identity."""
    return ml.ManagedServiceIdentityArgs(
        type=ml.ManagedServiceIdentityType.USER_ASSIGNED, user_assigned_identities=[identity_id]
    )
