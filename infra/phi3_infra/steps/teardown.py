"""What `pulumi destroy` does beyond deleting resources: it leaves no name blocked and nothing
running.

- Workspaces. Azure ML soft-deletes a workspace unless it is deleted permanently *when* it is
  deleted (`DELETE .../workspaces/{name}?forceToPurge=true`; MicrosoftDocs/azure-ai-docs
  articles/machine-learning/concept-soft-delete.md: "You could choose to permanently delete a
  workspace at the time of deletion"), and a soft-deleted name stays blocked for 14 days. The
  same request sent after a soft delete no longer finds the workspace (Azure/azure-cli#33756),
  and azure-native's delete has no purge option. So the hub and the project are registered with
  `retain_on_delete` (Pulumi forgets them without calling Azure) and `PermanentWorkspaceDelete`
  deletes them: the project, then its hub, each permanently, each followed to its end.
- Key Vault. A deleted vault stays soft-deleted (7 days here) and blocks its name;
  `SoftDeletePurge` purges it after azure-native deleted it. With purge protection on, Azure
  refuses any purge: the vault is left to expire (bump nameGeneration to redeploy).
- Log Analytics. A deleted workspace stays soft-deleted for 14 days with its data, unless the
  delete says `force=true` ("To remove the workspace completely and release the name, use the
  force flag": Azure/azure-rest-api-specs operationalinsights stable/2025-07-01 Workspaces.json,
  Workspaces_Delete). Once soft-deleted it can only be recovered, then deleted again
  (MicrosoftDocs/azure-monitor-docs articles/azure-monitor/logs/delete-workspace.md, "Delete a
  workspace permanently"), and a re-created stack recovers the old one, data and all (same
  name, group and region), where users met a workspace nothing could use
  (pulumi/pulumi-azure-native#1319). azure-native's delete sends no query parameter
  (provider/pkg/provider/provider.go `Delete`) and has no custom delete for it. So the
  workspace is `retain_on_delete` and `PermanentLogAnalyticsDelete` deletes it with force.
- Training job. `JobCancellation` cancels a job that is still running and waits until it has
  stopped, so a destroyed stack pays for no GPU.

Pulumi deletes a resource only after everything that depends on it, so the order follows from
the dependencies (workspace.py, foundation.py, training.py; `A <- B`: B depends on A, so B goes
first):

    resource group <- SoftDeletePurge <- key vault <- PermanentWorkspaceDelete <- hub <- project
    resource group <- storage, registry, App Insights, job identity <- PermanentWorkspaceDelete
    resource group <- PermanentLogAnalyticsDelete <- Log Analytics <- App Insights
    project <- job <- JobCancellation;  project <- endpoints, assets

`pulumi destroy` removes the workspace contents first, then forgets project and hub, then
`PermanentWorkspaceDelete` deletes both while everything they use still exists, then the vault
and the other services go (Pulumi forgets Log Analytics after App Insights), then
`SoftDeletePurge` purges the vault and `PermanentLogAnalyticsDelete` deletes Log Analytics for
good, then the resource group.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi.dynamic

from phi3_infra.azure.arm import Poll, client_from_environment
from phi3_infra.azure.purge import (
    LogAnalyticsTargets,
    PurgeTargets,
    WorkspaceTargets,
    delete_log_analytics_permanently,
    delete_workspaces_permanently,
    purge_soft_deleted,
)
from phi3_infra.azure.waiting import cancel_job
from phi3_infra.steps.base import Step, inputs_of

# Deleting a workspace or stopping a job takes minutes; the bounds keep a stuck one from
# hanging the destroy.
WORKSPACE_DELETE_POLL = Poll(timeout_s=1800, interval_s=15)
JOB_CANCEL_POLL = Poll(timeout_s=1800, interval_s=30)
LOG_ANALYTICS_DELETE_POLL = Poll(timeout_s=900, interval_s=15)


class _WorkspaceDeleteProvider(Step):
    """Nothing to create; on delete, delete the workspaces permanently (Pulumi only forgot them)."""

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        return pulumi.dynamic.CreateResult(id_=f"workspaces-{props['resource_group']}", outs=props)

    # Other workspaces are a replacement: the old step's delete removes the old workspaces,
    # which Pulumi retained when it replaced them.
    replaced_by = ("subscription_id", "resource_group", "workspaces")

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        targets = inputs_of(props, WorkspaceTargets)
        with client_from_environment() as client:
            delete_workspaces_permanently(client, targets, WORKSPACE_DELETE_POLL).log()


class PermanentWorkspaceDelete(pulumi.dynamic.Resource):
    """Deletes `workspaces` (children first) permanently when it is deleted. The workspaces must
    be `retain_on_delete` and depend on it; `uses` are the ARM ids of what they use (storage,
    vault, registry, identities...): taking them as inputs makes this step depend on them, so
    `pulumi destroy` deletes none of them before the workspaces are gone (module docstring)."""

    def __init__(
        self,
        name: str,
        *,
        subscription_id: pulumi.Input[str],
        resource_group: pulumi.Input[str],
        workspaces: Sequence[str],
        uses: Sequence[pulumi.Input[str]],
        opts: pulumi.ResourceOptions,
    ) -> None:
        props = {
            "subscription_id": subscription_id,
            "resource_group": resource_group,
            "workspaces": list(workspaces),
            "uses": list(uses),
        }
        super().__init__(_WorkspaceDeleteProvider(), name, props, opts)


class _PurgeProvider(Step):
    """Nothing to create; on delete, purge the vault (azure-native deleted it just before)."""

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
        with client_from_environment() as client:
            purge_soft_deleted(client, inputs_of(props, PurgeTargets)).log()


class SoftDeletePurge(pulumi.dynamic.Resource):
    """Takes PurgeTargets' fields as inputs (the subscription may be an output); `resource_group`
    ties it to the group, so it goes just before the group does."""

    def __init__(
        self,
        name: str,
        *,
        subscription_id: pulumi.Input[str],
        resource_group: pulumi.Input[str],
        location: str,
        key_vault: str,
        purge_key_vault: bool,
        opts: pulumi.ResourceOptions,
    ) -> None:
        props = {
            "subscription_id": subscription_id,
            "resource_group": resource_group,
            "location": location,
            "key_vault": key_vault,
            "purge_key_vault": purge_key_vault,
        }
        super().__init__(_PurgeProvider(), name, props, opts)


class _LogAnalyticsDeleteProvider(Step):
    """Nothing to create; on delete, delete the workspace with force (Pulumi only forgot it)."""

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        return pulumi.dynamic.CreateResult(id_=f"log-analytics-{props['workspace']}", outs=props)

    # Another workspace is a replacement: the old step's delete removes the old workspace,
    # which Pulumi retained when it replaced it.
    replaced_by = tuple(LogAnalyticsTargets.__dataclass_fields__)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        targets = inputs_of(props, LogAnalyticsTargets)
        with client_from_environment() as client:
            delete_log_analytics_permanently(client, targets, LOG_ANALYTICS_DELETE_POLL).log()


class PermanentLogAnalyticsDelete(pulumi.dynamic.Resource):
    """Deletes the Log Analytics workspace for good when it is deleted. The workspace must be
    `retain_on_delete` and depend on it; `resource_group` ties it to the group, so it goes after
    the workspace's users and before the group."""

    def __init__(
        self,
        name: str,
        *,
        subscription_id: pulumi.Input[str],
        resource_group: pulumi.Input[str],
        location: str,
        workspace: str,
        opts: pulumi.ResourceOptions,
    ) -> None:
        props = {
            "subscription_id": subscription_id,
            "resource_group": resource_group,
            "location": location,
            "workspace": workspace,
        }
        super().__init__(_LogAnalyticsDeleteProvider(), name, props, opts)


# -- training job ---------------------------------------------------------------------------------
class _JobCancellationProvider(Step):
    """Nothing to create; on delete, cancel the job if it still runs and wait until it stopped."""

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        return pulumi.dynamic.CreateResult(id_=f"cancel-{props['job_id']}", outs=props)

    # A new job replaces the step: the old step's delete cancels the superseded job.
    replaced_by = ("job_id",)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        with client_from_environment() as client:
            status = cancel_job(client, props["job_id"], JOB_CANCEL_POLL)
        pulumi.log.info(f"training job {props['job_id'].rsplit('/', 1)[-1]}: {status or 'gone'}")


class JobCancellation(pulumi.dynamic.Resource):
    """Cancels the job at ARM id `job_id` when it is deleted; it must depend on the job, so it
    is deleted (and the job stopped) before the job and its workspace are."""

    def __init__(
        self, name: str, *, job_id: pulumi.Input[str], opts: pulumi.ResourceOptions
    ) -> None:
        super().__init__(_JobCancellationProvider(), name, {"job_id": job_id}, opts)
