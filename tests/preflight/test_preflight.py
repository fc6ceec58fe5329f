"""The training preflight against the fake ARM server: each way a stack fails late, caught early.

Names and serving quota have their own files (test_names.py, test_serving_quota.py)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from phi3_infra.azure.arm import ArmAuthError, ArmClient, ArmUnavailableError
from phi3_infra.azure.preflight import (
    PreflightRequest,
    ServingRequest,
    Verdict,
    normalize_family,
    run_preflight,
)
from tests.fakes.arm_server import CATALOG, SUBSCRIPTION_ID, FakeArm, FixedToken
from tests.preflight.stacks import E4S, ESV3, GROUP, NAMES, STORAGE, request

A100 = "standardNCADSA100v4Family"
H100 = "standardNCadsH100v5Family"
NC24, NC48, H100_40 = (
    "Standard_NC24ads_A100_v4",
    "Standard_NC48ads_A100_v4",
    "Standard_NC40ads_H100_v5",
)


def test_first_fitting_sku_is_chosen_and_ranked(fake_arm: FakeArm, arm_client: ArmClient) -> None:
    fake_arm.add_region("eastus2", quota={A100: (0, 24), H100: (0, 80)})
    report = run_preflight(arm_client, request(skus=(NC48, NC24, H100_40)))
    (region,) = report.regions
    assert [(c.sku, c.rank, c.verdict) for c in region.checks] == [
        (NC48, 1, Verdict.NO_QUOTA),
        (NC24, 2, Verdict.FITS),
        (H100_40, 3, Verdict.FITS),
    ]
    assert region.chosen is not None and region.chosen.sku == NC24
    assert (region.chosen.vcpus_per_node, region.chosen.gpus_per_node) == (24, 1)
    assert report.fits and report.usable_regions == ("eastus2",)
    assert "Standard_NC24ads_A100_v4" in report.table() and "fits <- chosen" in report.table()


def test_family_quota_short_says_what_to_request(fake_arm: FakeArm, arm_client: ArmClient) -> None:
    # A100 quota starts at 0. The fake also lists a workspace-level row for the family with a
    # large limit: only the subscription-level row may count.
    fake_arm.add_region("eastus2", quota={H100: (0, 40)})
    report = run_preflight(arm_client, request(skus=(NC24,)))
    (check,) = report.regions[0].checks
    assert check.verdict is Verdict.NO_QUOTA and not report.fits
    assert check.family_quota is not None and (
        check.family_quota.used,
        check.family_quota.limit,
    ) == (0, 0)
    message = report.failure_message()
    for fact in (
        "'Standard NCADSA100v4 Family Cluster Dedicated vCPUs' in eastus2",
        "need 24 vCPUs, used 0, limit 0",
        "Raise the limit to at least 24",
        "Azure Machine Learning studio > Quota",
        f"az quota update --scope /subscriptions/{SUBSCRIPTION_ID}/providers/"
        f"Microsoft.MachineLearningServices/locations/eastus2 --resource-name {A100} "
        "--resource-type dedicated --limit-object value=24",
    ):
        assert fact in message


def test_quota_in_use_queues_the_job_and_a_low_limit_does_not_fit(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    # Serverless jobs whose size has quota that other jobs use wait in a queue; only a limit
    # below the job's need makes it impossible (how-to-use-serverless-compute.md, "Quota").
    fake_arm.add_region("eastus2", quota={A100: (24, 48)})
    assert run_preflight(arm_client, request(skus=(NC24,), training_nodes=1)).fits
    two_nodes = run_preflight(arm_client, request(skus=(NC24,), training_nodes=2))
    (check,) = two_nodes.regions[0].checks
    assert check.verdict is Verdict.QUEUES and two_nodes.fits
    (warning,) = two_nodes.warnings
    assert "waits in Azure ML's queue" in warning and "24 of 48 in use" in warning
    three_nodes = run_preflight(arm_client, request(skus=(NC24,), training_nodes=3))
    assert not three_nodes.fits
    assert "need 72 vCPUs, used 24, limit 48 (24 free)" in three_nodes.failure_message()


def test_a_size_that_starts_now_wins_over_one_that_queues(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    fake_arm.add_region("eastus2", quota={A100: (24, 48), H100: (0, 40)})
    region = run_preflight(arm_client, request(skus=(NC48, H100_40))).regions[0]
    assert [c.verdict for c in region.checks] == [Verdict.QUEUES, Verdict.FITS]
    assert region.chosen is not None and region.chosen.sku == H100_40


def test_regional_total_too_low_while_family_fits(fake_arm: FakeArm, arm_client: ArmClient) -> None:
    fake_arm.add_region("eastus2", quota={A100: (0, 96)}, dedicated_total=(0, 20))
    report = run_preflight(arm_client, request(skus=(NC24,)))
    (check,) = report.regions[0].checks
    assert check.verdict is Verdict.NO_QUOTA
    assert check.family_quota is not None and check.family_quota.covers(24)
    assert check.regional_quota is not None and check.regional_quota.limit == 20
    message = report.failure_message()
    assert "'Total Cluster Dedicated Regional vCPUs' in eastus2: need 24 vCPUs, used 0" in message
    assert "Family Cluster Dedicated" not in message


def test_the_size_the_stack_already_trained_on_needs_no_quota(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    # No A100 quota left (say, it was lowered after the job ran): the job exists, nothing new
    # runs, so the stack keeps its size instead of moving to another candidate and retraining.
    fake_arm.add_region("eastus2", quota={A100: (0, 0), H100: (0, 40)})
    report = run_preflight(arm_client, request(skus=(H100_40, NC24), fixed_sku=NC24))
    (check,) = report.regions[0].checks
    assert report.fits and report.regions[0].chosen is check
    assert (check.sku, check.verdict, check.vcpus_per_node, check.gpus_per_node) == (
        NC24,
        Verdict.TRAINED,
        24,
        1,
    )
    assert "already ran on this size" in check.advice and "trained <- chosen" in report.table()
    assert not run_preflight(arm_client, request(skus=(NC24,))).fits  # without it: no quota


def test_a_trained_size_still_gets_every_other_check(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    fake_arm.add_region("eastus2", quota={A100: (0, 0), ESV3: (0, 0)})
    fake_arm.providers["Microsoft.Network"] = "NotRegistered"
    fake_arm.take_name(STORAGE, NAMES["storage_account"])
    stack = request(
        skus=(NC24,),
        fixed_sku=NC24,
        serving=ServingRequest(E4S, 1),
        unique_names=NAMES,
        resource_group=GROUP,
    )
    report = run_preflight(arm_client, stack)
    assert not report.fits and report.regions[0].chosen is not None
    assert [b.kind for b in report.blockers] == ["provider_not_registered", "name_taken"]
    serving_check = report.regions[0].serving
    assert serving_check is not None and serving_check.verdict is Verdict.NO_QUOTA


def test_a_stack_that_neither_trains_nor_serves_asks_for_no_quota(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    # The default stack is infrastructure only: no GPU spend, so no GPU quota is needed.
    report = run_preflight(arm_client, request(skus=()))
    assert report.fits and report.regions[0].checks == () and report.regions[0].chosen is None
    assert not fake_arm.calls_to("/usages") and not fake_arm.calls_to("/vmSizes")


def test_low_priority_uses_the_low_priority_total(fake_arm: FakeArm, arm_client: ArmClient) -> None:
    # No dedicated A100 quota at all: low-priority has its own regional pool.
    fake_arm.add_region("eastus2", quota={A100: (0, 0)}, low_priority_total=(0, 100))
    assert not run_preflight(arm_client, request(skus=(NC24,))).fits
    low = run_preflight(arm_client, request(skus=(NC24,), training_nodes=4, low_priority=True))
    assert low.fits and low.regions[0].chosen is not None
    fake_arm.add_region("eastus2", quota={A100: (0, 0)}, low_priority_total=(0, 20))
    short = run_preflight(arm_client, request(skus=(NC24,), low_priority=True))
    assert not short.fits
    message = short.failure_message()
    assert "'Total Cluster LowPriority Regional vCPUs' in eastus2: need 24 vCPUs, used 0" in message
    assert "low-priority" in message


def test_size_without_low_priority_is_unavailable_for_it(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    dedicated_only = dataclasses.replace(CATALOG[NC24], low_priority_capable=False)
    fake_arm.add_region("eastus2", sizes=(dedicated_only,), quota={A100: (0, 24)})
    assert run_preflight(arm_client, request(skus=(NC24,))).fits
    report = run_preflight(arm_client, request(skus=(NC24,), low_priority=True))
    (check,) = report.regions[0].checks
    assert check.verdict is Verdict.UNAVAILABLE and "cannot run low-priority" in check.advice


def test_sku_absent_in_region_falls_back(fake_arm: FakeArm, arm_client: ArmClient) -> None:
    fake_arm.add_region("westeurope", sizes=(H100_40, "Standard_E16s_v3"), quota={H100: (0, 40)})
    report = run_preflight(arm_client, request(regions=("westeurope",), skus=(NC24, H100_40)))
    first, second = report.regions[0].checks
    assert first.verdict is Verdict.UNAVAILABLE
    assert "not offered for Azure ML compute in westeurope" in first.advice
    assert second.verdict is Verdict.FITS and report.fits


def test_sku_not_supported_for_amlcompute_is_unavailable(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    instance_only = dataclasses.replace(CATALOG[NC24], compute_types=("ComputeInstance",))
    fake_arm.add_region("eastus2", sizes=(instance_only,), quota={A100: (0, 96)})
    (check,) = run_preflight(arm_client, request(skus=(NC24,))).regions[0].checks
    assert check.verdict is Verdict.UNAVAILABLE and "not offered" in check.advice


def test_region_without_azure_ml_is_unavailable(fake_arm: FakeArm, arm_client: ArmClient) -> None:
    fake_arm.add_region("eastus2", quota={A100: (0, 24)})
    report = run_preflight(arm_client, request(regions=("eastus2", "nowhere"), skus=(NC24,)))
    assert report.usable_regions == ("eastus2",) and not report.fits
    (check,) = report.regions[1].checks
    assert (
        check.verdict is Verdict.UNAVAILABLE
        and "LocationNotAvailableForResourceType" in check.advice
    )


def test_unregistered_provider_blocks_with_the_command(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    fake_arm.add_region("eastus2", quota={A100: (0, 24)})
    fake_arm.providers["Microsoft.Network"] = "NotRegistered"
    del fake_arm.providers["Microsoft.ContainerRegistry"]  # never registered: not listed at all
    report = run_preflight(arm_client, request())
    assert not report.fits and report.usable_regions == ()
    assert [b.name for b in report.blockers] == ["Microsoft.ContainerRegistry", "Microsoft.Network"]
    assert "az provider register --namespace Microsoft.Network --wait" in report.failure_message()


# The issue's list: what the stack creates, plus Network, which Azure requires for this workflow.
ISSUE_PROVIDERS = "MachineLearningServices Storage KeyVault ContainerRegistry ManagedIdentity"
ISSUE_PROVIDERS += " Insights OperationalInsights Network"


@pytest.mark.parametrize("namespace", [f"Microsoft.{name}" for name in ISSUE_PROVIDERS.split()])
def test_each_needed_provider_is_checked(
    fake_arm: FakeArm, arm_client: ArmClient, namespace: str
) -> None:
    fake_arm.add_region("eastus2", quota={A100: (0, 24)})
    fake_arm.providers[namespace] = "Registering"
    (blocker,) = run_preflight(arm_client, request()).blockers
    assert blocker.name == namespace and f"{namespace} is Registering" in blocker.advice


def test_soft_deleted_key_vault_holds_the_name(fake_arm: FakeArm, arm_client: ArmClient) -> None:
    fake_arm.add_region("eastus2", quota={A100: (0, 24)})
    fake_arm.soft_delete_vault("kv-phi3-abc123", "eastus2")
    fake_arm.soft_delete_vault("kv-phi3-locked", "eastus2", purge_protection=True)
    fake_arm.soft_delete_vault("kv-someone-else", "eastus2")
    names = ("KV-PHI3-ABC123", "kv-phi3-locked", "kv-phi3-fresh")
    report = run_preflight(arm_client, request(key_vault_names=names))
    assert [b.name for b in report.blockers] == ["kv-phi3-abc123", "kv-phi3-locked"]
    message = report.failure_message()
    assert "az keyvault purge --name kv-phi3-abc123 --location eastus2" in message
    assert "purge protection" in message and "az keyvault recover --name kv-phi3-locked" in message


def test_soft_deleted_workspace_holds_the_name(fake_arm: FakeArm, arm_client: ArmClient) -> None:
    fake_arm.add_region("eastus2", quota={A100: (0, 24)})
    fake_arm.soft_delete_workspace("hub-phi3-eastus2", "rg-phi3", "eastus2")
    report = run_preflight(arm_client, request(workspace_names=("hub-phi3-eastus2", "proj-phi3")))
    (blocker,) = report.blockers
    assert blocker.kind == "soft_deleted_workspace"
    # Only the portal's recovery view frees a name held by an already soft-deleted workspace:
    # a forceToPurge DELETE finds nothing (concept-soft-delete.md; Azure/azure-cli#33756).
    assert "Recently deleted" in blocker.advice and "nameGeneration" in blocker.advice
    assert "forceToPurge" not in blocker.advice


def test_missing_deleted_workspaces_type_is_a_warning(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    fake_arm.add_region("eastus2", quota={A100: (0, 24)})
    fake_arm.deleted_workspaces = None
    report = run_preflight(arm_client, request(workspace_names=("hub-phi3-eastus2",)))
    assert report.fits
    (warning,) = report.warnings
    assert "Recently deleted" in warning and "hub-phi3-eastus2" in warning


def test_auth_failure_is_could_not_check(fake_arm: FakeArm) -> None:
    fake_arm.add_region("eastus2")
    client = fake_arm.client(FixedToken("wrong"))
    with client, pytest.raises(ArmAuthError):
        run_preflight(client, request())


def test_outage_is_could_not_check_not_does_not_fit(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    fake_arm.add_region("eastus2", quota={A100: (0, 24)})
    fake_arm.fail(503, path_contains="/usages")
    with pytest.raises(ArmUnavailableError, match="503"):
        run_preflight(arm_client, request())


def test_throttled_then_answers(fake_arm: FakeArm, arm_client: ArmClient) -> None:
    fake_arm.add_region("eastus2", quota={A100: (0, 24)})
    fake_arm.fail(429, times=2, retry_after="0", path_contains="/vmSizes")
    assert run_preflight(arm_client, request()).fits
    assert [c.status for c in fake_arm.calls_to("/vmSizes")] == [429, 429, 200]


def test_calls_run_concurrently_with_one_sign_in(
    fake_arm: FakeArm, arm_client: ArmClient, credential: FixedToken
) -> None:
    regions = ("eastus", "eastus2", "westus3", "swedencentral", "westeurope")
    for region in regions:
        fake_arm.add_region(region, quota={A100: (0, 24)})
    fake_arm.latency_s = 0.2
    report = run_preflight(arm_client, request(regions=regions, skus=(NC24, NC48, H100_40)))
    assert len(report.calls) == 11  # providers + vmSizes and usages per region
    # One after another they would take at least 11 x 0.2 s; the margin absorbs a loaded machine.
    assert report.wall_seconds < 0.2 * 11 / 2, report.wall_seconds
    assert report.concurrency_ratio > 2
    assert credential.requests == 1


def test_json_form_carries_the_same_facts(fake_arm: FakeArm, arm_client: ArmClient) -> None:
    fake_arm.add_region("eastus2", quota={A100: (0, 24)})
    body = json.loads(json.dumps(run_preflight(arm_client, request(skus=(NC48, NC24))).to_json()))
    assert body["fits"] is True and body["chosen"] == {"eastus2": NC24}
    first = body["regions"][0]["checks"][0]
    assert first["verdict"] == "no_quota" and first["vcpus_needed"] == 48
    assert first["family_quota"] == {
        "label": "Standard NCADSA100v4 Family Cluster Dedicated vCPUs",
        "used": 0,
        "limit": 24,
    }
    assert "az quota update" in first["advice"]


def test_bad_request_names_every_problem() -> None:
    with pytest.raises(ValueError) as caught:
        PreflightRequest(
            "not-a-guid",
            ("East US",),
            ("NC24",),
            0,
            serving=ServingRequest("E4s", 0),
            unique_names={"bucket": "x"},
        )
    message = str(caught.value)
    for field in (
        "subscription_id 'not-a-guid'",
        "region 'East US'",
        "sku 'NC24'",
        "sku 'E4s'",
        "training_nodes is 0",
        "serving instance_count is 0",
        "unique_names kind 'bucket'",
    ):
        assert field in message


@pytest.mark.parametrize(
    ("vm_sizes_name", "usages_name"),
    [
        ("standardNCADSA100v4Family", "Standard NCADSA100v4 Family Cluster Dedicated vCPUs"),
        ("standardNCadsH100v5Family", "Standard NCADS H100 v5 Family Cluster LowPriority vCPUs"),
        ("standardDSv2Family", "Standard_DSv2_Family_Cluster_Dedicated_vCPUs"),
    ],
)
def test_family_names_match_across_apis(vm_sizes_name: str, usages_name: str) -> None:
    assert normalize_family(vm_sizes_name) == normalize_family(usages_name)
