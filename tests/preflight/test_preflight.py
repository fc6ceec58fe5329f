"""The preflight against the fake ARM server: each way a GPU stack fails late, caught early."""

from __future__ import annotations

import dataclasses
import json

import pytest

from phi3_infra.arm import ArmAuthError, ArmClient, ArmUnavailableError
from phi3_infra.preflight import (
    PreflightRequest,
    Verdict,
    normalize_family,
    run_preflight,
)
from tests.fakes.arm_server import CATALOG, SUBSCRIPTION_ID, FakeArm, FixedToken

A100 = "standardNCADSA100v4Family"
H100 = "standardNCadsH100v5Family"
NC24, NC48, H100_40 = (
    "Standard_NC24ads_A100_v4",
    "Standard_NC48ads_A100_v4",
    "Standard_NC40ads_H100_v5",
)


def request(
    regions: tuple[str, ...] = ("eastus2",),
    skus: tuple[str, ...] = (NC24, H100_40),
    max_nodes: int = 1,
    **extra: object,
) -> PreflightRequest:
    return PreflightRequest(SUBSCRIPTION_ID, regions, skus, max_nodes, **extra)  # type: ignore[arg-type]


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


def test_used_vcpus_count_against_the_family_quota(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    fake_arm.add_region("eastus2", quota={A100: (24, 48)})
    assert run_preflight(arm_client, request(skus=(NC24,), max_nodes=1)).fits
    two_nodes = run_preflight(arm_client, request(skus=(NC24,), max_nodes=2))
    assert not two_nodes.fits
    assert "need 48 vCPUs, used 24, limit 48 (24 free)" in two_nodes.failure_message()


def test_stack_own_running_cluster_does_not_count_against_itself(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    # `pulumi up` again while a job runs the stack's cluster at full scale; another cluster in
    # the subscription uses the family too and does count.
    fake_arm.add_region("eastus2", quota={A100: (0, 96)}, dedicated_total=(0, 96))
    fake_arm.run_cluster("eastus2", "proj-phi3", "gpu-cluster", A100, 48)
    fake_arm.run_cluster("eastus2", "other-ws", "gpu-cluster", A100, 24)
    stack = request(skus=(NC24,), max_nodes=2, workspace_names=("hub-phi3", "proj-phi3"))
    report = run_preflight(arm_client, dataclasses.replace(stack, compute_name="gpu-cluster"))
    (check,) = report.regions[0].checks
    assert check.verdict is Verdict.FITS
    assert check.family_quota is not None and check.family_quota.used == 24
    assert check.regional_quota is not None and check.regional_quota.used == 24
    unaware = run_preflight(arm_client, stack)
    assert "need 48 vCPUs, used 72, limit 96 (24 free)" in unaware.failure_message()


def test_regional_total_short_while_family_fits(fake_arm: FakeArm, arm_client: ArmClient) -> None:
    fake_arm.add_region("eastus2", quota={A100: (0, 96)}, dedicated_total=(80, 100))
    report = run_preflight(arm_client, request(skus=(NC24,)))
    (check,) = report.regions[0].checks
    assert check.verdict is Verdict.NO_QUOTA
    assert check.family_quota is not None and check.family_quota.covers(24)
    assert check.regional_quota is not None and check.regional_quota.free == 20
    message = report.failure_message()
    assert "'Total Cluster Dedicated Regional vCPUs' in eastus2: need 24 vCPUs, used 80" in message
    assert "Family Cluster Dedicated" not in message


def test_low_priority_uses_the_low_priority_total(fake_arm: FakeArm, arm_client: ArmClient) -> None:
    # No dedicated A100 quota at all: low-priority has its own regional pool.
    fake_arm.add_region("eastus2", quota={A100: (0, 0)}, low_priority_total=(0, 100))
    assert not run_preflight(arm_client, request(skus=(NC24,))).fits
    low = run_preflight(arm_client, request(skus=(NC24,), max_nodes=4, low_priority=True))
    assert low.fits and low.regions[0].chosen is not None
    fake_arm.add_region("eastus2", quota={A100: (0, 0)}, low_priority_total=(90, 100))
    short = run_preflight(arm_client, request(skus=(NC24,), low_priority=True))
    assert not short.fits
    message = short.failure_message()
    assert (
        "'Total Cluster LowPriority Regional vCPUs' in eastus2: need 24 vCPUs, used 90" in message
    )
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
    assert "not offered for Azure ML compute clusters in westeurope" in first.advice
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
    assert "forceToPurge=true" in blocker.advice and "Recently deleted" in blocker.advice


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
        PreflightRequest("not-a-guid", ("East US",), ("NC24",), 0, compute_name="gpu-cluster")
    message = str(caught.value)
    for field in (
        "subscription_id 'not-a-guid'",
        "region 'East US'",
        "sku 'NC24'",
        "max_nodes is 0",
        "compute_name is set but workspace_names is empty",
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
