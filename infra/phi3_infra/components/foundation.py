"""Resource group and the services a Foundry hub depends on, each with its secure baseline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

import pulumi
from pulumi_azure_native import (
    applicationinsights,
    containerregistry,
    keyvault,
    operationalinsights,
    resources,
    storage,
)

from phi3_infra.naming import StackNames
from phi3_infra.steps.teardown import PermanentLogAnalyticsDelete, SoftDeletePurge

_LOG_RETENTION_DAYS = 30
# Shortest retention Azure allows: a destroyed stack's vault name is released sooner.
_VAULT_SOFT_DELETE_DAYS = 7


class _InResourceGroup(TypedDict):
    """Arguments every resource in the group shares."""

    resource_group_name: pulumi.Input[str]
    location: str
    tags: dict[str, str]
    opts: pulumi.ResourceOptions


@dataclass(frozen=True)
class FoundationArgs:
    names: StackNames
    location: str
    tags: dict[str, str]
    tenant_id: pulumi.Input[str]
    subscription_id: pulumi.Input[str]
    key_vault_purge_protection: bool


class Foundation(pulumi.ComponentResource):
    """Resource group, storage, Key Vault, container registry, Log Analytics and App Insights."""

    def __init__(
        self, name: str, args: FoundationArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("phi3:infra:Foundation", name, None, opts)
        names, location, tags = args.names, args.location, args.tags
        child = pulumi.ResourceOptions(parent=self)

        self.resource_group = resources.ResourceGroup(
            "resource-group",
            resource_group_name=names.resource_group,
            location=location,
            tags=tags,
            opts=child,
        )
        in_group = _InResourceGroup(
            resource_group_name=self.resource_group.name, location=location, tags=tags, opts=child
        )
        # Registered before the vault, which depends on it: `pulumi destroy` deletes the vault
        # first, then purges it here, then deletes the group (see teardown.py).
        self.purge = SoftDeletePurge(
            "soft-delete-purge",
            subscription_id=args.subscription_id,
            resource_group=self.resource_group.name,
            location=location,
            key_vault=names.key_vault,
            purge_key_vault=not args.key_vault_purge_protection,
            opts=child,
        )

        self.storage_account = storage.StorageAccount(
            "storage",
            account_name=names.storage_account,
            kind=storage.Kind.STORAGE_V2,
            sku={"name": storage.SkuName.STANDARD_LRS},
            enable_https_traffic_only=True,
            minimum_tls_version=storage.MinimumTlsVersion.TLS1_2,
            allow_blob_public_access=False,
            # Entra ID only: no account keys or SAS; the hub uses identity-based datastores.
            allow_shared_key_access=False,
            default_to_o_auth_authentication=True,
            allow_cross_tenant_replication=False,
            **in_group,
        )

        self.key_vault = keyvault.Vault(
            "key-vault",
            vault_name=names.key_vault,
            properties={
                "tenant_id": args.tenant_id,
                "sku": {"family": keyvault.SkuFamily.A, "name": keyvault.SkuName.STANDARD},
                "enable_rbac_authorization": True,
                "enable_soft_delete": True,
                "soft_delete_retention_in_days": _VAULT_SOFT_DELETE_DAYS,
                # Azure rejects an explicit `false`; leaving it unset means off. Off keeps the
                # stack destroyable and its names reusable (purge on destroy); on protects secrets
                # against deletion but blocks this vault name for good (bump nameGeneration).
                "enable_purge_protection": True if args.key_vault_purge_protection else None,
            },
            resource_group_name=self.resource_group.name,
            location=location,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.purge]),
        )

        self.container_registry = containerregistry.Registry(
            "container-registry",
            registry_name=names.container_registry,
            sku={"name": containerregistry.SkuName.BASIC},
            admin_user_enabled=False,
            anonymous_pull_enabled=False,
            **in_group,
        )

        # Registered before the workspace, which depends on it and is only forgotten by Pulumi:
        # after App Insights has gone, this step deletes the workspace for good, not into 14
        # days of soft delete, before the group goes (teardown.py).
        self.log_analytics_delete = PermanentLogAnalyticsDelete(
            "log-analytics-permanent-delete",
            subscription_id=args.subscription_id,
            resource_group=self.resource_group.name,
            location=location,
            workspace=names.log_analytics,
            opts=child,
        )
        self.log_analytics = operationalinsights.Workspace(
            "log-analytics",
            workspace_name=names.log_analytics,
            sku={"name": operationalinsights.WorkspaceSkuNameEnum.PER_GB2018},
            retention_in_days=_LOG_RETENTION_DAYS,
            resource_group_name=self.resource_group.name,
            location=location,
            tags=tags,
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[self.log_analytics_delete], retain_on_delete=True
            ),
        )

        self.app_insights = applicationinsights.Component(
            "app-insights",
            resource_name_=names.app_insights,
            kind="web",
            application_type=applicationinsights.ApplicationType.WEB,
            workspace_resource_id=self.log_analytics.id,
            ingestion_mode=applicationinsights.IngestionMode.LOG_ANALYTICS,
            **in_group,
        )

        self.register_outputs(
            {
                "resourceGroupName": self.resource_group.name,
                "storageAccountId": self.storage_account.id,
                "keyVaultId": self.key_vault.id,
                "containerRegistryId": self.container_registry.id,
                "appInsightsId": self.app_insights.id,
            }
        )
