"""Azure AI Foundry hub and project.

No role assignments for the workspaces' own identities: the resource provider creates them. The
hub's system-assigned identity is "automatically assigned the role when you provision the hub.
Don't manually change this role assignment" (Storage Blob Data Contributor on the hub's storage;
MicrosoftDocs/azure-ai-docs articles/ai-foundry/how-to/disable-local-auth.md, "Scenarios for hub
storage account role assignments"), and a project's identity gets a role assignment with an ABAC
condition limited to the project's own containers (articles/machine-learning/
concept-hub-workspace.md, "Storage"; how-to-identity-based-service-authentication.md, "Data
isolation for shared resources").
For a system-assigned workspace identity, role assignment creation is "Managed by Microsoft"
(how-to-identity-based-service-authentication.md, "Workspace identity types"). Assigning one of
them again is a 409 RoleAssignmentExists, and for the project it would widen its access to the
whole account.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

import pulumi
from pulumi_azure_native import machinelearningservices as ml

from phi3_infra.steps.teardown import PermanentWorkspaceDelete


class _WorkspaceCommon(TypedDict):
    """Settings the hub and the project share."""

    resource_group_name: pulumi.Input[str]
    location: pulumi.Input[str]
    sku: ml.SkuArgsDict
    tags: dict[str, str]
    opts: pulumi.ResourceOptions


@dataclass(frozen=True)
class WorkspaceArgs:
    hub_name: str
    project_name: str
    resource_group_name: pulumi.Input[str]
    location: pulumi.Input[str]
    # The services the hub is attached to, by ARM id.
    storage_account_id: pulumi.Input[str]
    key_vault_id: pulumi.Input[str]
    container_registry_id: pulumi.Input[str]
    app_insights_id: pulumi.Input[str]
    job_identity_id: pulumi.Input[str]  # the user-assigned identity serverless jobs run as
    subscription_id: pulumi.Input[str]
    tags: dict[str, str]


class FoundryWorkspace(pulumi.ComponentResource):
    """A hub attached to the foundation's services, and one project in it that serverless jobs
    can run in as `job_identity_id` (the ARM id of a user-assigned identity)."""

    def __init__(
        self, name: str, args: WorkspaceArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("phi3:infra:FoundryWorkspace", name, None, opts)
        attached = [
            args.storage_account_id,
            args.key_vault_id,
            args.container_registry_id,
            args.app_insights_id,
        ]
        # Depends on everything the workspaces use, the project's job identity included, and is
        # depended on by the hub and the project: `pulumi destroy` forgets both, then deletes
        # them permanently here (project first) while all they use still exists (teardown.py).
        self.permanent_delete = PermanentWorkspaceDelete(
            "workspace-permanent-delete",
            subscription_id=args.subscription_id,
            resource_group=args.resource_group_name,
            workspaces=(args.project_name, args.hub_name),
            uses=[*attached, args.job_identity_id],
            opts=pulumi.ResourceOptions(parent=self),
        )
        common = _WorkspaceCommon(
            resource_group_name=args.resource_group_name,
            location=args.location,
            sku={"name": "Basic", "tier": ml.SkuTier.BASIC},
            tags=args.tags,
            # Azure ML keeps a workspace soft-deleted, its name blocked, unless it is deleted
            # permanently at once: Pulumi only forgets these, and `permanent_delete` deletes
            # them permanently once their contents are gone (teardown.py).
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[self.permanent_delete], retain_on_delete=True
            ),
        )

        self.hub = ml.Workspace(
            "hub",
            workspace_name=args.hub_name,
            kind="Hub",
            friendly_name=f"Phi-3 fine-tuning hub ({args.hub_name})",
            storage_account=args.storage_account_id,
            key_vault=args.key_vault_id,
            container_registry=args.container_registry_id,
            application_insights=args.app_insights_id,
            system_datastores_auth_mode=ml.SystemDatastoresAuthMode.IDENTITY,
            identity={"type": ml.ManagedServiceIdentityType.SYSTEM_ASSIGNED},
            **common,
        )
        self.project = ml.Workspace(
            "project",
            workspace_name=args.project_name,
            kind="Project",
            friendly_name=f"Phi-3 fine-tuning project ({args.project_name})",
            hub_resource_id=self.hub.id,
            # Serverless jobs run as a user-assigned identity of their workspace, never as its
            # system-assigned one (articles/machine-learning/how-to-use-serverless-compute.md,
            # "Identity support and credential passthrough"). Added next to the system-assigned
            # identity, which stays the workspace's own (no primaryUserAssignedIdentity), so the
            # resource provider keeps creating its roles (how-to-identity-based-service-
            # authentication.md, "Add a user-assigned managed identity to a workspace in addition
            # to a system-assigned identity"; request shape as in Azure/azure-rest-api-specs
            # machinelearningservices stable/2025-12-01 examples/Workspace/create.json).
            identity={
                "type": ml.ManagedServiceIdentityType.SYSTEM_ASSIGNED_USER_ASSIGNED,
                "user_assigned_identities": [args.job_identity_id],
            },
            **common,
        )
        self.register_outputs({"hubId": self.hub.id, "projectId": self.project.id})
