"""`pulumi destroy` leaves no name blocked: the workspaces are deleted permanently at deletion
time (project first, each to its end), the deleted vault is purged and the Log Analytics
workspace is deleted with force, through the teardown steps' deletes against the fake ARM
server, signed in like the engine's provider process."""

from __future__ import annotations

from typing import Any

import pytest

from phi3_infra.azure.arm import ArmClient, OperationTimedOut
from phi3_infra.azure.purge import (
    LogAnalyticsTargets,
    PurgeTargets,
    WorkspaceTargets,
    delete_log_analytics_permanently,
    delete_workspaces_permanently,
    purge_soft_deleted,
)
from phi3_infra.steps import teardown
from phi3_infra.steps.teardown import (
    _LogAnalyticsDeleteProvider,
    _PurgeProvider,
    _WorkspaceDeleteProvider,
)
from tests.fakes.arm_pipeline import PipelineArm
from tests.fakes.arm_server import SUBSCRIPTION_ID, FakeArm
from tests.fakes.arm_teardown import TeardownArm
from tests.fakes.clock import fake_poll

GROUP = "rg-phi3-eastus2-1234abcd"
PROJECT, HUB = "proj-phi3-1234abcd", "hub-phi3-1234abcd"
WORKSPACES = WorkspaceTargets(SUBSCRIPTION_ID, GROUP, (PROJECT, HUB))
VAULT = PurgeTargets(SUBSCRIPTION_ID, "eastus2", "phi3-kv-1234abcd", purge_key_vault=True)
LOGS = LogAnalyticsTargets(SUBSCRIPTION_ID, GROUP, "eastus2", "log-phi3-eastus2-1234abcd")


def _deployed(pipeline: PipelineArm) -> None:
    for workspace in (HUB, PROJECT):
        pipeline.add_workspace(workspace, GROUP)


def _workspace_calls(fake: FakeArm) -> list[str]:
    """The DELETEs of workspaces and the looks at operations, in order."""
    return [
        f"{c.method} {c.path.rsplit('/', 1)[-1]}"
        for c in fake.calls
        if (c.method == "DELETE" and "/workspaces/" in c.path) or "/operationResults/" in c.path
    ]


def test_destroy_deletes_the_workspaces_permanently_project_then_hub(
    signed_in_env: FakeArm, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = PipelineArm(signed_in_env).install()
    _deployed(pipeline)
    poll, clock = fake_poll(interval_s=15)
    monkeypatch.setattr(teardown, "WORKSPACE_DELETE_POLL", poll)
    _WorkspaceDeleteProvider().delete(
        "workspaces-rg", {**vars(WORKSPACES), "workspaces": [PROJECT, HUB]}
    )
    assert pipeline.workspaces == {}
    # Deleted for good: no name is held by a soft-deleted workspace.
    assert signed_in_env.deleted_workspaces == []
    assert all(
        c.query.get("forceToPurge") == ["true"] for c in signed_in_env.calls if c.method == "DELETE"
    )
    # The project's delete is followed to its end before the hub's starts.
    assert _workspace_calls(signed_in_env) == [
        f"DELETE {PROJECT}", "GET operation-1", "GET operation-1",
        f"DELETE {HUB}", "GET operation-2", "GET operation-2",
    ]  # fmt: skip
    # Each look waited as long as ARM's Retry-After said.
    assert clock.sleeps == [10, 10, 10, 10]


def test_a_workspace_soft_deleted_earlier_is_reported_blocked_not_counted_as_purged(
    pipeline_arm: PipelineArm, arm_client: ArmClient
) -> None:
    """The forceToPurge delete no longer finds a soft-deleted workspace (404) and its name stays
    blocked: the destroy says so and how to free it, instead of calling it done."""
    pipeline_arm.add_workspace(HUB, GROUP)
    pipeline_arm.fake.soft_delete_workspace(PROJECT, GROUP, "eastus2")
    report = delete_workspaces_permanently(arm_client, WORKSPACES, fake_poll()[0])
    assert report.purged == [f"workspace {HUB}"]
    assert report.already_gone == []
    (kept,) = report.kept
    assert kept.startswith(f"workspace {PROJECT} (soft-deleted earlier: its name stays blocked")
    assert "Recently deleted" in kept and "nameGeneration" in kept
    assert [item["name"] for item in pipeline_arm.fake.deleted_workspaces or []] == [PROJECT]


def test_a_repeated_destroy_finds_nothing_to_delete_and_succeeds(
    pipeline_arm: PipelineArm, arm_client: ArmClient
) -> None:
    report = delete_workspaces_permanently(arm_client, WORKSPACES, fake_poll()[0])
    assert report.already_gone == [f"workspace {PROJECT}", f"workspace {HUB}"]
    assert report.purged == report.kept == []


def test_a_delete_that_outlasts_the_wait_stops_before_the_hub(
    pipeline_arm: PipelineArm, arm_client: ArmClient
) -> None:
    _deployed(pipeline_arm)
    pipeline_arm.operation_looks = 1000
    with pytest.raises(OperationTimedOut) as caught:
        delete_workspaces_permanently(arm_client, WORKSPACES, fake_poll(timeout_s=600)[0])
    message = str(caught.value)
    assert f"permanent delete of workspace {PROJECT} still InProgress after 600 s" in message
    assert "Run `pulumi destroy` again" in message
    assert HUB in pipeline_arm.workspaces
    assert not [c for c in pipeline_arm.fake.calls if c.path.endswith(f"/workspaces/{HUB}")]


def test_destroy_purges_the_deleted_vault(signed_in_env: FakeArm) -> None:
    PipelineArm(signed_in_env).install()
    signed_in_env.soft_delete_vault(VAULT.key_vault, "eastus2")
    props: dict[str, Any] = {**vars(VAULT), "resource_group": GROUP}
    _PurgeProvider().delete("purge-rg", props)
    assert signed_in_env.deleted_vaults == []
    assert [(c.method, c.path.rsplit("/", 2)[-2]) for c in signed_in_env.calls] == [
        ("POST", VAULT.key_vault)
    ]


def test_a_vault_already_purged_counts_as_done(
    pipeline_arm: PipelineArm, arm_client: ArmClient
) -> None:
    report = purge_soft_deleted(arm_client, VAULT)
    assert report.already_gone == [f"key vault {VAULT.key_vault}"]


def test_purge_protection_keeps_the_vault_without_asking(
    pipeline_arm: PipelineArm, arm_client: ArmClient
) -> None:
    pipeline_arm.fake.soft_delete_vault(VAULT.key_vault, "eastus2", purge_protection=True)
    report = purge_soft_deleted(
        arm_client, PurgeTargets(**{**vars(VAULT), "purge_key_vault": False})
    )
    assert report.kept == [
        "key vault phi3-kv-1234abcd (purge protection: soft-deleted until it expires)"
    ]
    assert not pipeline_arm.fake.calls_to("/deletedVaults/")
    assert len(pipeline_arm.fake.deleted_vaults) == 1


@pytest.mark.parametrize(("protection", "purges"), [("false", True), ("true", False)])
def test_the_program_registers_the_vault_purge_with_the_vaults_setting(
    plan: Any, protection: str, purges: bool
) -> None:
    run = plan(stages='["infra"]', trainingData=None, keyVaultPurgeProtection=protection)
    purge = run.named("soft-delete-purge").inputs
    assert purge["purge_key_vault"] is purges
    assert purge["key_vault"] == run.named("key-vault").azure_name
    assert purge["resource_group"] == run.named("resource-group").azure_name
    assert run.waits_for("key-vault", "soft-delete-purge")


def test_the_program_orders_the_permanent_workspace_delete(plan: Any) -> None:
    """Pulumi forgets hub and project (retained) after their contents are gone; the permanent
    delete runs next, while everything they use still exists (the project holds the job
    identity, so that identity goes only after the project)."""
    run = plan(stages='["infra"]', trainingData=None)
    step = run.named("workspace-permanent-delete")
    hub, project = run.named("hub"), run.named("project")
    assert step.inputs["workspaces"] == [project.azure_name, hub.azure_name]
    assert step.inputs["resource_group"] == run.named("resource-group").azure_name
    assert hub.options.retain_on_delete and project.options.retain_on_delete
    assert run.waits_for("hub", "workspace-permanent-delete")
    assert run.waits_for("project", "workspace-permanent-delete")
    for used in ("storage", "key-vault", "container-registry", "app-insights", "identity"):
        assert run.waits_for("workspace-permanent-delete", used), used


# -- log analytics --------------------------------------------------------------------------------
def test_destroy_deletes_log_analytics_for_good(
    signed_in_env: FakeArm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delete without force would leave it soft-deleted for 14 days, data and name kept."""
    azure = TeardownArm(signed_in_env).install()
    azure.add_log_analytics(LOGS.workspace, GROUP)
    poll, _ = fake_poll(interval_s=15)
    monkeypatch.setattr(teardown, "LOG_ANALYTICS_DELETE_POLL", poll)
    _LogAnalyticsDeleteProvider().delete("log-analytics-x", vars(LOGS))
    assert azure.log_analytics == {}
    assert azure.deleted_log_analytics == []
    (delete,) = [c for c in signed_in_env.calls if c.method == "DELETE"]
    assert delete.path.endswith(f"/workspaces/{LOGS.workspace}")
    assert delete.query["force"] == ["true"]
    # Followed to its end: the operation status the 202 named.
    assert signed_in_env.calls_to("/operationstatuses/")


def test_a_log_analytics_workspace_soft_deleted_earlier_is_kept_with_how_to_free_it(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    azure = TeardownArm(fake_arm).install()
    azure.add_group(GROUP)
    azure.soft_delete_log_analytics(LOGS.workspace, GROUP)
    # A same-named workspace soft-deleted in another group is not this stack's.
    azure.soft_delete_log_analytics(LOGS.workspace, "rg-other")
    report = delete_log_analytics_permanently(arm_client, LOGS, fake_poll()[0])
    assert report.purged == report.already_gone == []
    (kept,) = report.kept
    assert kept.startswith(f"Log Analytics workspace {LOGS.workspace} (soft-deleted with its data")
    assert f"az monitor log-analytics workspace recover --resource-group {GROUP}" in kept
    assert "az monitor log-analytics workspace delete --force --yes" in kept


@pytest.mark.parametrize("group_exists", [True, False])
def test_a_log_analytics_workspace_already_gone_counts_as_done(
    fake_arm: FakeArm, arm_client: ArmClient, group_exists: bool
) -> None:
    """204 (nothing there), or the group's 404 on a destroy rerun after the group went."""
    azure = TeardownArm(fake_arm).install()
    if group_exists:
        azure.add_group(GROUP)
    azure.soft_delete_log_analytics(LOGS.workspace, "rg-other")
    report = delete_log_analytics_permanently(arm_client, LOGS, fake_poll()[0])
    assert report.already_gone == [f"Log Analytics workspace {LOGS.workspace}"]
    assert report.purged == report.kept == []


def test_the_program_deletes_log_analytics_for_good_after_app_insights(plan: Any) -> None:
    """Pulumi only forgets the workspace (azure-native's delete has no force) after App Insights
    is gone; the step deletes it for good, then the group goes."""
    run = plan(stages='["infra"]', trainingData=None)
    step, logs = run.named("log-analytics-permanent-delete"), run.named("log-analytics")
    assert logs.options.retain_on_delete
    assert step.inputs["workspace"] == logs.azure_name
    assert step.inputs["resource_group"] == run.named("resource-group").azure_name
    assert step.inputs["location"] == "eastus2"
    assert run.waits_for("log-analytics", "log-analytics-permanent-delete")
    assert run.waits_for("app-insights", "log-analytics")
    assert run.waits_for("log-analytics-permanent-delete", "resource-group")
