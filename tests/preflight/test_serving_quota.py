"""Serving in the preflight: the endpoint's size must be one managed online endpoints accept, and
its instances plus the 20% upgrade reserve must fit the family's free quota, before anything is
created (otherwise the deployment fails with OutOfQuota hours later, after training)."""

from __future__ import annotations

import dataclasses

import pytest

from phi3_infra.azure.arm import ArmClient
from phi3_infra.azure.preflight import Verdict, run_preflight
from phi3_infra.catalog.online_sizes import instances_reserved
from tests.fakes.arm_server import FakeArm, VmSize
from tests.preflight.stacks import DEPLOYMENT_ID, E4S, ESV3, serving

A100 = "standardNCADSA100v4Family"
NC24 = "Standard_NC24ads_A100_v4"


@pytest.mark.parametrize(
    ("instances", "reserved"), [(1, 2), (2, 3), (3, 4), (5, 6), (10, 12), (11, 14)]
)
def test_the_reserve_is_ceil_of_one_point_two_instances(instances: int, reserved: int) -> None:
    # The documented example: 10 instances need quota for 12 (quota-allocation-online-deployment).
    assert instances_reserved(E4S, instances) == reserved


def test_sizes_the_sku_list_exempts_reserve_nothing() -> None:
    assert instances_reserved(NC24, 10) == 10
    assert instances_reserved("standard_nc24ads_a100_v4", 3) == 3


def test_serving_quota_counts_the_upgrade_reserve(fake_arm: FakeArm, arm_client: ArmClient) -> None:
    # 8 vCPUs of ESv3: one 4-vCPU instance reserves 2 x 4 = 8 and fits; two reserve 3 x 4 = 12.
    fake_arm.add_region("eastus2", quota={ESV3: (0, 8)})
    one = run_preflight(arm_client, serving(instances=1))
    check = one.regions[0].serving
    assert one.fits and check is not None and check.verdict is Verdict.FITS
    assert (check.instances_reserved, check.vcpus_needed) == (2, 8)
    two = run_preflight(arm_client, serving(instances=2))
    assert not two.fits and two.usable_regions == ()
    message = two.failure_message()
    for fact in (
        "serving: Standard_E4s_v3 (standardESv3Family, 4 vCPUs x 2 instance(s) + the 20% upgrade "
        "reserve = 3)",
        "'Standard ESv3 Family Cluster Dedicated vCPUs' in eastus2: need 12 vCPUs, used 0, limit 8",
        f"--resource-name {ESV3} --resource-type dedicated --limit-object value=12",
        "or set phi3-foundry:servingInstanceType to a size with quota",
    ):
        assert fact in message
    assert "Standard_E4s_v3" in two.table() and "2 (3)" in two.table()


def test_quota_in_use_by_others_counts_against_serving(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    # Unlike a training job, a deployment does not queue: it needs the quota free now.
    fake_arm.add_region("eastus2", quota={ESV3: (4, 12)})
    assert not run_preflight(arm_client, serving(instances=2)).fits
    fake_arm.add_region("eastus2", quota={ESV3: (0, 12)}, dedicated_total=(995, 1000))
    message = run_preflight(arm_client, serving(instances=1)).failure_message()
    assert "'Total Cluster Dedicated Regional vCPUs' in eastus2: need 8 vCPUs, used 995" in message


def test_reserve_exempt_size_needs_exactly_its_instances(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    fake_arm.add_region("eastus2", quota={A100: (0, 48)})
    report = run_preflight(arm_client, serving(instances=2, size=NC24))
    check = report.regions[0].serving
    assert report.fits and check is not None and check.vcpus_needed == 48


def test_a_size_managed_online_endpoints_do_not_take_is_refused(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    # Standard_D2s_v3 exists for Azure ML compute but is not in the managed online SKU list.
    d2s = VmSize("Standard_D2s_v3", "standardDSv3Family", 2, 0)
    fake_arm.add_region("eastus2", sizes=(d2s, E4S), quota={"standardDSv3Family": (0, 100)})
    report = run_preflight(arm_client, serving(size="Standard_D2s_v3"))
    check = report.regions[0].serving
    assert check is not None and check.verdict is Verdict.UNAVAILABLE
    assert "not a size managed online endpoints accept" in report.failure_message()
    assert "phi3-foundry:servingInstanceType" in check.advice


def test_a_size_the_region_does_not_offer_is_refused(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    fake_arm.add_region("eastus2", sizes=(NC24,), quota={ESV3: (0, 100)})
    check = run_preflight(arm_client, serving()).regions[0].serving
    assert check is not None and check.verdict is Verdict.UNAVAILABLE
    assert "is not offered by Azure ML in eastus2" in check.advice


def test_the_stacks_unchanged_deployment_needs_no_new_quota(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    # A re-run with the deployment as it is (same model and server): its instances and reserve
    # are already held, although the free quota alone would not cover a new deployment.
    fake_arm.add_region("eastus2", quota={ESV3: (0, 8)})
    fake_arm.deploy_online("eastus2", DEPLOYMENT_ID, E4S, 1)
    rerun = run_preflight(arm_client, serving(deployment_id=DEPLOYMENT_ID))
    check = rerun.regions[0].serving
    assert rerun.fits and check is not None and check.advice == "already deployed at this size"
    assert not run_preflight(arm_client, serving()).fits  # someone else's deployment counts


def test_resizing_the_stacks_deployment_does_not_count_its_instances_twice(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    fake_arm.add_region("eastus2", quota={ESV3: (0, 12)})
    fake_arm.deploy_online("eastus2", DEPLOYMENT_ID, E4S, 1)
    report = run_preflight(arm_client, serving(instances=2, deployment_id=DEPLOYMENT_ID))
    check = report.regions[0].serving
    assert report.fits and check is not None and check.vcpus_held_by_own_deployment == 4
    assert check.family_quota is not None and check.family_quota.used == 0


def test_a_missing_deployment_is_a_first_deployment(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    fake_arm.add_region("eastus2", quota={ESV3: (0, 8)})
    assert run_preflight(arm_client, serving(deployment_id=DEPLOYMENT_ID)).fits
    (call,) = fake_arm.calls_to("/deployments")  # the endpoint's deployments: no endpoint yet
    assert call.status == 404


def test_serving_is_checked_next_to_training(fake_arm: FakeArm, arm_client: ArmClient) -> None:
    fake_arm.add_region("eastus2", quota={A100: (0, 24), ESV3: (0, 0)})
    report = run_preflight(
        arm_client, dataclasses.replace(serving(), skus=(NC24,), training_nodes=1)
    )
    region = report.regions[0]
    assert region.chosen is not None and region.chosen.sku == NC24
    assert region.serving is not None and region.serving.verdict is Verdict.NO_QUOTA
    assert not report.fits and "serving:" in report.failure_message()
    assert len(fake_arm.calls_to("/usages")) == 1  # one answer serves both checks


def test_a_new_models_deployment_needs_room_next_to_the_live_one(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    # Blue/green: the deployment serving now keeps its instances until traffic has moved to the
    # new one, so a model change needs the new deployment's quota on top of the live one's.
    live = DEPLOYMENT_ID.rsplit("/", 1)[0] + "/phi3-0a1b2c3d4e5f"
    fake_arm.add_region("eastus2", quota={ESV3: (0, 8)})
    fake_arm.deploy_online("eastus2", live, E4S, 1)
    report = run_preflight(arm_client, serving(deployment_id=DEPLOYMENT_ID))
    check = report.regions[0].serving
    assert not report.fits and check is not None and check.verdict is Verdict.NO_QUOTA
    assert (check.vcpus_held_by_own_deployment, check.vcpus_held_by_live_deployments) == (0, 4)
    message = report.failure_message()
    assert "need 8 vCPUs, used 4, limit 8" in message
    assert (
        "[used includes the 4 vCPUs of deployment(s) phi3-0a1b2c3d4e5f, which serve until "
        "traffic moves to the new one: during a rollout both run]"
    ) in message
    fake_arm.add_region("eastus2", quota={ESV3: (4, 12)})  # room for both
    assert run_preflight(arm_client, serving(deployment_id=DEPLOYMENT_ID)).fits
