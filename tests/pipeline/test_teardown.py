"""`pulumi destroy` purges the soft-deleted vault and workspaces: through the purge resource's
delete, signed in like the engine's provider process, against the fake ARM server."""

from __future__ import annotations

from typing import Any

import pytest

from phi3_infra.arm import ArmClient
from phi3_infra.teardown import PurgeTargets, _PurgeProvider, purge_soft_deleted
from tests.fakes.arm_pipeline import PipelineArm
from tests.fakes.arm_server import SUBSCRIPTION_ID, FakeArm

TARGETS = PurgeTargets(
    subscription_id=SUBSCRIPTION_ID,
    resource_group="rg-phi3-eastus2-1234abcd",
    location="eastus2",
    key_vault="phi3-kv-1234abcd",
    purge_key_vault=True,
    workspaces=("proj-phi3-1234abcd", "hub-phi3-1234abcd"),
)


def _destroyed(fake: FakeArm, *, purge_protection: bool = False) -> None:
    """What `pulumi destroy` leaves before the purge resource's delete runs."""
    fake.soft_delete_vault(TARGETS.key_vault, "eastus2", purge_protection=purge_protection)
    for workspace in TARGETS.workspaces:
        fake.soft_delete_workspace(workspace, TARGETS.resource_group, "eastus2")


def _purge_calls(fake: FakeArm) -> list[tuple[str, str]]:
    return [(c.method, c.path.rsplit("/", 2)[-2] + "/" + c.path.rsplit("/", 1)[-1])
            for c in fake.calls if c.method in ("DELETE", "POST")]  # fmt: skip


def test_destroy_purges_workspaces_child_first_then_the_vault(
    signed_in_env: FakeArm,
) -> None:
    PipelineArm(signed_in_env).install()
    _destroyed(signed_in_env)
    props: dict[str, Any] = {**vars(TARGETS), "workspaces": list(TARGETS.workspaces)}
    _PurgeProvider().delete("purge-rg", props)
    assert signed_in_env.deleted_vaults == [] and signed_in_env.deleted_workspaces == []
    assert _purge_calls(signed_in_env) == [
        ("DELETE", "workspaces/proj-phi3-1234abcd"),
        ("DELETE", "workspaces/hub-phi3-1234abcd"),
        ("POST", "phi3-kv-1234abcd/purge"),
    ]
    assert all(
        c.query.get("forceToPurge") == ["true"] for c in signed_in_env.calls_to("/workspaces/")
    )


def test_not_found_counts_as_already_purged(
    pipeline_arm: PipelineArm, arm_client: ArmClient
) -> None:
    """A re-run destroy, or a workspace Azure already purged: nothing to do, no error."""
    pipeline_arm.fake.soft_delete_workspace("hub-phi3-1234abcd", TARGETS.resource_group, "eastus2")
    report = purge_soft_deleted(arm_client, TARGETS)
    assert report.purged == ["workspace hub-phi3-1234abcd"]
    assert report.already_gone == ["workspace proj-phi3-1234abcd", "key vault phi3-kv-1234abcd"]


def test_purge_protection_keeps_the_vault_without_asking(
    pipeline_arm: PipelineArm, arm_client: ArmClient
) -> None:
    _destroyed(pipeline_arm.fake, purge_protection=True)
    report = purge_soft_deleted(
        arm_client, PurgeTargets(**{**vars(TARGETS), "purge_key_vault": False})
    )
    assert report.kept == [
        "key vault phi3-kv-1234abcd (purge protection: soft-deleted until it expires)"
    ]
    assert not pipeline_arm.fake.calls_to("/deletedVaults/")
    assert len(pipeline_arm.fake.deleted_vaults) == 1


@pytest.mark.parametrize(("protection", "purges"), [("false", True), ("true", False)])
def test_the_program_registers_the_purge_with_the_vaults_setting(
    plan: Any, protection: str, purges: bool
) -> None:
    run = plan(stages='["infra"]', trainingData=None, keyVaultPurgeProtection=protection)
    purge = run.named("soft-delete-purge").inputs
    assert purge["purge_key_vault"] is purges
    assert purge["key_vault"] == run.named("key-vault").azure_name
    assert purge["workspaces"] == [run.named("project").azure_name, run.named("hub").azure_name]
    assert purge["resource_group"] == run.named("resource-group").azure_name
