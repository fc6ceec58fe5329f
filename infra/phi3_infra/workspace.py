"""Azure AI Foundry hub and project, and the storage roles their own identities need."""

from __future__ import annotations

from typing import TypedDict

import pulumi
from pulumi_azure_native import machinelearningservices as ml

from phi3_infra.foundation import OnFoundationArgs
from phi3_infra.rbac import BuiltInRole, assign_role

# With identity-based system datastores and shared keys disabled, the service reaches the
# default storage account as the workspace's own managed identity (Azure AI Foundry docs,
# "Disable shared-key access for your hub's storage account"): blob containers hold job
# inputs, outputs and models; file shares hold code snapshots and prompt flows.
_DATASTORE_ROLES = (
    BuiltInRole.STORAGE_BLOB_DATA_CONTRIBUTOR,
    BuiltInRole.STORAGE_FILE_DATA_PRIVILEGED_CONTRIBUTOR,
)


class _WorkspaceCommon(TypedDict):
    """Settings the hub and the project share."""

    resource_group_name: pulumi.Input[str]
    location: pulumi.Input[str]
    identity: ml.ManagedServiceIdentityArgsDict
    sku: ml.SkuArgsDict
    tags: dict[str, str]
    opts: pulumi.ResourceOptions


class FoundryWorkspace(pulumi.ComponentResource):
    """A hub attached to the foundation's services, and one project in it."""

    def __init__(
        self, name: str, args: OnFoundationArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("phi3:infra:FoundryWorkspace", name, None, opts)
        names, foundation = args.names, args.foundation
        common = _WorkspaceCommon(
            resource_group_name=foundation.resource_group.name,
            location=foundation.resource_group.location,
            identity={"type": ml.ManagedServiceIdentityType.SYSTEM_ASSIGNED},
            sku={"name": "Basic", "tier": ml.SkuTier.BASIC},
            tags=args.tags,
            # Deleted before the purge resource, whose delete then purges them (teardown.py).
            opts=pulumi.ResourceOptions(parent=self, depends_on=[foundation.purge]),
        )

        self.hub = ml.Workspace(
            "hub",
            workspace_name=names.hub,
            kind="Hub",
            friendly_name=f"Phi-3 fine-tuning hub ({names.hub})",
            storage_account=foundation.storage_account.id,
            key_vault=foundation.key_vault.id,
            container_registry=foundation.container_registry.id,
            application_insights=foundation.app_insights.id,
            system_datastores_auth_mode=ml.SystemDatastoresAuthMode.IDENTITY,
            **common,
        )
        self.project = ml.Workspace(
            "project",
            workspace_name=names.project,
            kind="Project",
            friendly_name=f"Phi-3 fine-tuning project ({names.project})",
            hub_resource_id=self.hub.id,
            **common,
        )
        # The hub reads and writes its system datastores; the project does the same for its own
        # containers in the shared account (jobs and models registered in the project).
        self.role_assignments = [
            assign_role(
                scope_name=names.storage_account,
                scope_id=foundation.storage_account.id,
                role=role,
                principal_role=principal_role,
                principal_id=workspace.identity.apply(_principal_id),
                subscription_id=args.subscription_id,
                parent=self,
            )
            for principal_role, workspace in (("hub", self.hub), ("project", self.project))
            for role in _DATASTORE_ROLES
        ]
        self.register_outputs({"hubId": self.hub.id, "projectId": self.project.id})


def _principal_id(identity: ml.outputs.ManagedServiceIdentityResponse | None) -> str:
    if identity is None:
        raise ValueError("workspace has no managed identity; the system-assigned one is required")
    return identity.principal_id
