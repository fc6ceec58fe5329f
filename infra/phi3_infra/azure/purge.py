"""The permanent deletes and purges `pulumi destroy` runs: workspaces, Key Vault, Log Analytics.

phi3_infra.steps.teardown says why each is needed and in which order the steps run them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi

from phi3_infra.azure.api_versions import (
    KEY_VAULT_API_VERSION,
    LOG_ANALYTICS_API_VERSION,
    ML_API_VERSION,
)
from phi3_infra.azure.arm import ArmClient, ArmNotFoundError, Poll

_RERUN_ADVICE = "Run `pulumi destroy` again: it continues where this one stopped."


@dataclass
class PurgeReport:
    purged: list[str] = field(default_factory=list)
    already_gone: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    def log(self) -> None:
        pulumi.log.info(
            f"purged: {self.purged or 'nothing'}; already gone: {self.already_gone or '-'}; "
            f"kept: {self.kept or '-'}"
        )
        for item in self.kept:
            pulumi.log.warn(f"kept {item}")


# -- workspaces -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkspaceTargets:
    subscription_id: str
    resource_group: str
    workspaces: Sequence[str]  # children first: a project before its hub


def _workspace_path(targets: WorkspaceTargets, workspace: str) -> str:
    return (
        f"/subscriptions/{targets.subscription_id}/resourceGroups/{targets.resource_group}"
        f"/providers/Microsoft.MachineLearningServices/workspaces/{workspace}"
    )


def delete_workspaces_permanently(
    client: ArmClient, targets: WorkspaceTargets, poll: Poll
) -> PurgeReport:
    """Delete each workspace permanently, in order, each to its end before the next: a hub
    cannot go while its project exists. No workspace there (404, or 204 "does not exist" in the
    Workspaces_Delete spec) means already gone, unless an earlier soft delete holds its name."""
    report = PurgeReport()
    absent = []
    for workspace in targets.workspaces:
        try:
            status = client.delete_and_wait(
                _workspace_path(targets, workspace),
                ML_API_VERSION,
                poll,
                f"permanent delete of workspace {workspace}",
                {"forceToPurge": "true"},
                advice=_RERUN_ADVICE,
            )
        except ArmNotFoundError:
            status = 404
        if status in (200, 202):
            report.purged.append(f"workspace {workspace}")
        else:
            absent.append(workspace)
    blocked = _soft_deleted(client, targets.subscription_id) if absent else set()
    for workspace in absent:
        if workspace.lower() in blocked:
            report.kept.append(
                f"workspace {workspace} (soft-deleted earlier: its name stays blocked until Azure "
                "purges it after 14 days; delete it permanently in the portal under Azure Machine "
                "Learning > Recently deleted, or bump phi3-foundry:nameGeneration)"
            )
        else:
            report.already_gone.append(f"workspace {workspace}")
    return report


def _soft_deleted(client: ArmClient, subscription_id: str) -> set[str]:
    """Names of the subscription's soft-deleted workspaces (the listing the portal's "Recently
    deleted" view reads); none where ARM has no such type."""
    path = f"/subscriptions/{subscription_id}/providers/Microsoft.MachineLearningServices"
    try:
        listing = list(client.list_json(f"{path}/deletedWorkspaces", ML_API_VERSION))
    except ArmNotFoundError:
        return set()
    return {str(item.get("name", "")).lower() for item in listing}


# -- key vault ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PurgeTargets:
    subscription_id: str
    location: str
    key_vault: str
    purge_key_vault: bool  # False with purge protection: Azure would refuse


def deleted_vault_path(subscription_id: str, location: str, vault: str) -> str:
    return (
        f"/subscriptions/{subscription_id}/providers/Microsoft.KeyVault/locations/{location}"
        f"/deletedVaults/{vault}"
    )


def purge_soft_deleted(client: ArmClient, targets: PurgeTargets) -> PurgeReport:
    """Purge the deleted vault; "not found" means already purged and counts as done."""
    report = PurgeReport()
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


# -- log analytics --------------------------------------------------------------------------------
@dataclass(frozen=True)
class LogAnalyticsTargets:
    subscription_id: str
    resource_group: str
    location: str
    workspace: str


def resource_group_of(arm_id: str) -> str:
    """The resource group an ARM id names (lowercase: ARM ids compare case-insensitively); "" for
    an id outside any group."""
    parts = arm_id.lower().split("/")
    return parts[parts.index("resourcegroups") + 1] if "resourcegroups" in parts else ""


def soft_deleted_log_analytics(
    client: ArmClient, subscription_id: str, resource_group: str, workspace: str
) -> list[dict[str, Any]]:
    """The soft-deleted Log Analytics workspaces named `workspace` that were in `resource_group`
    (DeletedWorkspaces_List, operationalinsights stable/2025-07-01 Workspaces.json: "recently
    deleted workspaces in a subscription, available for recovery")."""
    path = f"/subscriptions/{subscription_id}/providers/Microsoft.OperationalInsights"
    return [
        item
        for item in client.list_json(f"{path}/deletedWorkspaces", LOG_ANALYTICS_API_VERSION)
        if str(item.get("name", "")).lower() == workspace.lower()
        and resource_group_of(str(item.get("id", ""))) == resource_group.lower()
    ]


def log_analytics_recovery_advice(resource_group: str, location: str, workspace: str) -> str:
    """How to delete a soft-deleted Log Analytics workspace for good: recover it (in its group,
    which must exist again), then delete it with force (delete-workspace.md, "Recover a workspace
    in a soft-delete state" and "Delete a workspace permanently")."""
    where = f"--resource-group {resource_group} --workspace-name {workspace}"
    return (
        f"soft-deleted with its data until 14 days after its deletion; to delete it for good: "
        f"az group create --name {resource_group} --location {location} (if the group is gone), "
        f"az monitor log-analytics workspace recover {where}, then "
        f"az monitor log-analytics workspace delete --force --yes {where}"
    )


def delete_log_analytics_permanently(
    client: ArmClient, targets: LogAnalyticsTargets, poll: Poll
) -> PurgeReport:
    """`DELETE ...?force=true` followed to its end. Nothing there (204, or 404 once its group is
    gone) means already gone, unless an earlier delete without force left it soft-deleted."""
    report = PurgeReport()
    what = f"Log Analytics workspace {targets.workspace}"
    path = (
        f"/subscriptions/{targets.subscription_id}/resourceGroups/{targets.resource_group}"
        f"/providers/Microsoft.OperationalInsights/workspaces/{targets.workspace}"
    )
    try:
        status = client.delete_and_wait(
            path,
            LOG_ANALYTICS_API_VERSION,
            poll,
            f"permanent delete of {what}",
            {"force": "true"},
            advice=_RERUN_ADVICE,
        )
    except ArmNotFoundError:
        status = 404
    if status in (200, 202):
        report.purged.append(what)
    elif soft_deleted_log_analytics(
        client, targets.subscription_id, targets.resource_group, targets.workspace
    ):
        advice = log_analytics_recovery_advice(
            targets.resource_group, targets.location, targets.workspace
        )
        report.kept.append(f"{what} ({advice})")
    else:
        report.already_gone.append(what)
    return report
