"""The workload's user-assigned managed identity and the three roles the reference workflow uses."""

from __future__ import annotations

import pulumi
from pulumi_azure_native import machinelearningservices as ml
from pulumi_azure_native import managedidentity

from phi3_infra.foundation import OnFoundationArgs
from phi3_infra.rbac import BuiltInRole, assign_role

WORKLOAD_PRINCIPAL = "workload"


class WorkloadIdentity(pulumi.ComponentResource):
    """Identity that training jobs and endpoints run as: exactly three role assignments."""

    def __init__(
        self, name: str, args: OnFoundationArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("phi3:infra:WorkloadIdentity", name, None, opts)
        names, foundation = args.names, args.foundation

        self.identity = managedidentity.UserAssignedIdentity(
            "identity",
            resource_name_=names.identity,
            resource_group_name=foundation.resource_group.name,
            location=foundation.resource_group.location,
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        grants = (
            # Manage jobs, computes and endpoints in the environment's resource group.
            (names.resource_group, foundation.resource_group.id, BuiltInRole.CONTRIBUTOR),
            # Read training data and base models from the hub's storage.
            (
                names.storage_account,
                foundation.storage_account.id,
                BuiltInRole.STORAGE_BLOB_DATA_READER,
            ),
            # Pull the trainer and server images without registry admin credentials.
            (names.container_registry, foundation.container_registry.id, BuiltInRole.ACR_PULL),
        )
        self.role_assignments = [
            assign_role(
                scope_name=scope_name,
                scope_id=scope_id,
                role=role,
                principal_role=WORKLOAD_PRINCIPAL,
                principal_id=self.identity.principal_id,
                subscription_id=args.subscription_id,
                parent=self,
            )
            for scope_name, scope_id, role in grants
        ]
        self.register_outputs(
            {
                "identityId": self.identity.id,
                "clientId": self.identity.client_id,
                "principalId": self.identity.principal_id,
            }
        )


def runs_as(identity_id: pulumi.Input[str]) -> ml.ManagedServiceIdentityArgs:
    """The identity block of an Azure ML resource that runs as the workload identity."""
    return ml.ManagedServiceIdentityArgs(
        type=ml.ManagedServiceIdentityType.USER_ASSIGNED, user_assigned_identities=[identity_id]
    )
