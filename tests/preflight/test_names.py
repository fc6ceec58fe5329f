"""Global names in the preflight: a storage account, registry or Key Vault name someone else holds
stops the stack before anything exists; the stack's own resources from an earlier run do not."""

from __future__ import annotations

import json

import pytest

from phi3_infra.azure.arm import ArmAuthError, ArmClient
from phi3_infra.azure.preflight import run_preflight
from tests.fakes.arm_server import FakeArm
from tests.preflight.stacks import GROUP, NAMES, REGISTRY, STORAGE, VAULT, named

KINDS = [("storage_account", STORAGE), ("container_registry", REGISTRY), ("key_vault", VAULT)]


@pytest.mark.parametrize(("kind", "resource_type"), KINDS)
def test_a_name_taken_elsewhere_blocks_with_the_fix(
    fake_arm: FakeArm, arm_client: ArmClient, kind: str, resource_type: str
) -> None:
    fake_arm.take_name(resource_type, NAMES[kind].upper())  # DNS names: case does not matter
    report = run_preflight(arm_client, named())
    (blocker,) = report.blockers
    assert (blocker.kind, blocker.name) == ("name_taken", NAMES[kind])
    message = report.failure_message()
    for fact in (
        f"name '{NAMES[kind]}' is taken by a resource outside this stack's resource group {GROUP}",
        "AlreadyExists",
        "pulumi config set phi3-foundry:nameGeneration <current + 1>",
        "phi3-foundry:namePrefix",
    ):
        assert fact in message
    assert not report.fits and report.usable_regions == ()


def test_each_name_is_asked_of_its_own_provider(fake_arm: FakeArm, arm_client: ArmClient) -> None:
    assert run_preflight(arm_client, named()).fits
    for kind, resource_type in KINDS:
        namespace = resource_type.split("/")[0]
        (call,) = fake_arm.calls_to(f"/providers/{namespace}/checkNameAvailability")
        assert call.method == "POST" and call.status == 200
        assert json.loads(call.body) == {"name": NAMES[kind], "type": resource_type}


@pytest.mark.parametrize(("kind", "resource_type"), KINDS)
def test_the_stacks_own_resource_is_not_a_conflict_on_rerun(
    fake_arm: FakeArm, arm_client: ArmClient, kind: str, resource_type: str
) -> None:
    fake_arm.create_resource(GROUP, resource_type, NAMES[kind])
    assert run_preflight(arm_client, named()).fits


def test_the_same_name_in_another_resource_group_is_a_conflict(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    # Ours is the stack's resource group only: a resource of another stack or project in the
    # same subscription holds the name just as another subscription would.
    fake_arm.create_resource("rg-another-project", STORAGE, NAMES["storage_account"])
    (blocker,) = run_preflight(arm_client, named()).blockers
    assert blocker.name == NAMES["storage_account"]


def test_a_soft_deleted_vault_is_reported_once_with_its_purge(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    # checkNameAvailability also says "in use" for a soft-deleted vault: the purge advice is
    # the useful one, and it is given once.
    fake_arm.soft_delete_vault(NAMES["key_vault"], "eastus2")
    report = run_preflight(arm_client, named(key_vault_names=(NAMES["key_vault"],)))
    (blocker,) = report.blockers
    assert blocker.kind == "soft_deleted_key_vault"
    assert f"az keyvault purge --name {NAMES['key_vault']}" in blocker.advice


def test_an_unregistered_provider_is_reported_instead_of_its_name_check(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    # A provider not registered cannot answer for its names; registering it is the fix.
    fake_arm.providers["Microsoft.Storage"] = "NotRegistered"
    fake_arm.fail(409, path_contains="/Microsoft.Storage/checkNameAvailability")
    (blocker,) = run_preflight(arm_client, named()).blockers
    assert (blocker.kind, blocker.name) == ("provider_not_registered", "Microsoft.Storage")


def test_a_name_check_that_cannot_run_is_could_not_check(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    fake_arm.fail(403, path_contains="/Microsoft.KeyVault/checkNameAvailability")
    with pytest.raises(ArmAuthError, match="403"):
        run_preflight(arm_client, named())


def test_a_taken_name_whose_owner_cannot_be_read_is_could_not_check(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    fake_arm.take_name(REGISTRY, NAMES["container_registry"])
    fake_arm.fail(403, path_contains=f"/registries/{NAMES['container_registry']}")
    with pytest.raises(ArmAuthError):
        run_preflight(arm_client, named())


def test_names_need_no_quota_calls(fake_arm: FakeArm, arm_client: ArmClient) -> None:
    report = run_preflight(arm_client, named())
    assert report.regions[0].checks == () and report.regions[0].serving is None
    assert not fake_arm.calls_to("/usages")
