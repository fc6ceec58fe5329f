"""The real stack program under Pulumi mocks, with its quota preflight asking the fake ARM server
through the real credential chain: nothing is registered unless the preflight passes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pulumi
import pytest

from phi3_infra import offline
from phi3_infra.preflight import PreflightFailed, PreflightUnavailable
from phi3_infra.program import GPU_CLUSTER_NAME, build_stack
from phi3_infra.program import main as program_main
from tests.fakes.arm_server import FakeArm

A100 = "standardNCADSA100v4Family"
STACK_CONFIG = {
    "azure-native:location": "eastus2",
    "phi3-foundry:owner": "team@contoso.com",
    "phi3-foundry:expiresOn": "2027-01-31",
    "phi3-foundry:gpuSkus": '["Standard_NC48ads_A100_v4", "Standard_NC24ads_A100_v4"]',
    "phi3-foundry:stages": '["infra"]',
}
COMPUTE = "azure-native:machinelearningservices:Compute"


@pytest.fixture
def fake_arm(tmp_path: Path) -> Iterator[FakeArm]:
    # The subscription the mocks' getClientConfig answers with, as `pulumi up` would see it.
    fake = FakeArm(subscription_id=offline.SUBSCRIPTION_ID)
    with fake.serving(tmp_path / "tls"):
        yield fake


def test_passing_preflight_builds_the_cluster_with_the_first_size_that_fits(
    signed_in_env: FakeArm, registered: list[str]
) -> None:
    # 24 vCPUs of A100 quota: the 48-vCPU first choice does not fit, the 24-vCPU fallback does.
    signed_in_env.add_region("eastus2", quota={A100: (0, 24)})
    run = offline.run_offline(build_stack, STACK_CONFIG, "eastus2")
    (cluster,) = run.of_type(COMPUTE)
    assert cluster.inputs["computeName"] == GPU_CLUSTER_NAME
    assert cluster.inputs["properties"]["properties"]["vmSize"] == "Standard_NC24ads_A100_v4"
    assert run.outputs["gpuVmSize"] == "Standard_NC24ads_A100_v4"
    assert run.outputs["gpuReservedVcpus"] == 24
    assert signed_in_env.calls_to("/usages") and signed_in_env.calls_to("/vmSizes")
    assert len(registered) == 22 and COMPUTE in registered


def test_failing_preflight_registers_nothing_and_says_what_to_do(
    signed_in_env: FakeArm, registered: list[str]
) -> None:
    signed_in_env.add_region("eastus2", quota={A100: (0, 0)})
    with pytest.raises(PreflightFailed) as caught:
        offline.run_offline(build_stack, STACK_CONFIG, "eastus2")
    assert registered == []
    message = str(caught.value)
    assert "Standard NCADSA100v4 Family Cluster Dedicated vCPUs" in message
    assert "az quota" in message


def test_pulumi_sees_the_preflight_message_without_a_traceback(
    signed_in_env: FakeArm, registered: list[str]
) -> None:
    signed_in_env.add_region("eastus2", quota={A100: (0, 0)})
    with pytest.raises(pulumi.RunError, match="Cluster Dedicated vCPUs"):
        offline.run_offline(lambda: program_main() or {}, STACK_CONFIG, "eastus2")
    assert registered == []


def test_preflight_that_cannot_sign_in_stops_before_any_resource(
    signed_in_env: FakeArm, registered: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    signed_in_env.add_region("eastus2", quota={A100: (0, 96)})
    monkeypatch.setenv("FAKE_AZ_LOGGED_OUT", "1")
    with pytest.raises(PreflightUnavailable, match="az login"):
        offline.run_offline(build_stack, STACK_CONFIG, "eastus2")
    assert registered == []


def test_skipped_preflight_warns_and_takes_the_first_candidate_unchecked(
    signed_in_env: FakeArm, registered: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    warnings: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *_, **__: warnings.append(message))
    config = STACK_CONFIG | {"phi3-foundry:skipPreflight": "true"}
    run = offline.run_offline(build_stack, config, "eastus2")
    assert signed_in_env.calls == []
    assert run.outputs["gpuVmSize"] == "Standard_NC48ads_A100_v4"
    assert any("skipPreflight is set" in warning for warning in warnings)
