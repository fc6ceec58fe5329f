"""Purge what `pulumi destroy` leaves soft-deleted, so a destroyed stack blocks no name.

A deleted Key Vault stays soft-deleted (7 days here) and a deleted workspace blocks its name for
14 days; azure-native has no purge option. `SoftDeletePurge` is registered right after the
resource group and before the vault and workspaces, which depend on it: `pulumi destroy` deletes
them first, then this resource, whose delete purges them, then the resource group.

With Key Vault purge protection on, Azure refuses any purge: the vault is left to expire and its
name stays blocked (bump nameGeneration to redeploy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi.dynamic

from phi3_infra.arm import ArmClient, ArmNotFoundError, client_from_environment
from phi3_infra.waiting import ML_API_VERSION

KEY_VAULT_API_VERSION = "2023-07-01"


@dataclass(frozen=True)
class PurgeTargets:
    subscription_id: str
    resource_group: str
    location: str
    key_vault: str
    purge_key_vault: bool  # False with purge protection: Azure would refuse
    workspaces: Sequence[str]  # children first: a project before its hub


@dataclass
class PurgeReport:
    purged: list[str] = field(default_factory=list)
    already_gone: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def _workspace_path(targets: PurgeTargets, workspace: str) -> str:
    return (
        f"/subscriptions/{targets.subscription_id}/resourceGroups/{targets.resource_group}"
        f"/providers/Microsoft.MachineLearningServices/workspaces/{workspace}"
    )


def deleted_vault_path(subscription_id: str, location: str, vault: str) -> str:
    return (
        f"/subscriptions/{subscription_id}/providers/Microsoft.KeyVault/locations/{location}"
        f"/deletedVaults/{vault}"
    )


def purge_soft_deleted(client: ArmClient, targets: PurgeTargets) -> PurgeReport:
    """Purge the workspaces and the vault; "not found" means already purged (or never deleted
    softly) and counts as done."""
    report = PurgeReport()
    for workspace in targets.workspaces:
        try:
            client.delete(
                _workspace_path(targets, workspace), ML_API_VERSION, {"forceToPurge": "true"}
            )
            report.purged.append(f"workspace {workspace}")
        except ArmNotFoundError:
            report.already_gone.append(f"workspace {workspace}")
    vault = f"key vault {targets.key_vault}"
    if not targets.purge_key_vault:
        report.kept.append(f"{vault} (purge protection: soft-deleted until it expires)")
        return report
    try:
        client.post_json(
            deleted_vault_path(targets.subscription_id, targets.location, targets.key_vault)
            + "/purge",
            KEY_VAULT_API_VERSION,
        )
        report.purged.append(vault)
    except ArmNotFoundError:
        report.already_gone.append(vault)
    return report


class _PurgeProvider(pulumi.dynamic.ResourceProvider):
    """Nothing to create; on delete, purge (the resources it purges were deleted just before)."""

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        return pulumi.dynamic.CreateResult(id_=f"purge-{props['resource_group']}", outs=props)

    def diff(
        self, _id: str, olds: dict[str, Any], news: dict[str, Any]
    ) -> pulumi.dynamic.DiffResult:
        # Updating in place keeps the latest targets (e.g. purge protection switched on).
        return pulumi.dynamic.DiffResult(changes=olds != news)

    def update(
        self, _id: str, _olds: dict[str, Any], news: dict[str, Any]
    ) -> pulumi.dynamic.UpdateResult:
        return pulumi.dynamic.UpdateResult(outs=news)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        targets = PurgeTargets(**{key: props[key] for key in PurgeTargets.__dataclass_fields__})
        with client_from_environment() as client:
            report = purge_soft_deleted(client, targets)
        pulumi.log.info(
            f"purged: {report.purged or 'nothing'}; already gone: {report.already_gone or '-'}; "
            f"kept: {report.kept or '-'}"
        )


class SoftDeletePurge(pulumi.dynamic.Resource):
    """Takes PurgeTargets' fields as inputs (the subscription and group may be outputs)."""

    def __init__(
        self,
        name: str,
        *,
        subscription_id: pulumi.Input[str],
        resource_group: pulumi.Input[str],
        location: str,
        key_vault: str,
        purge_key_vault: bool,
        workspaces: Sequence[str],
        opts: pulumi.ResourceOptions,
    ) -> None:
        props = {
            "subscription_id": subscription_id,
            "resource_group": resource_group,
            "location": location,
            "key_vault": key_vault,
            "purge_key_vault": purge_key_vault,
            "workspaces": list(workspaces),
        }
        super().__init__(_PurgeProvider(), name, props, opts)
