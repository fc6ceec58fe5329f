"""The real stack program under Pulumi mocks, with its preflight asking the fake ARM server
through the real credential chain: nothing is registered unless the preflight passes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pulumi
import pytest

from phi3_infra.azure.preflight import PreflightFailed, PreflightUnavailable, ServingRequest
from phi3_infra.config import config_from_flat
from phi3_infra.naming import stack_names
from phi3_infra.program import (
    build_stack,
    check_inputs,
    nothing_served,
    preflight_request,
    quota_preflight,
    served_model,
)
from phi3_infra.program import main as program_main
from phi3_infra.stack_files import PROJECT
from phi3_infra.tooling import offline
from tests.fakes.arm_server import FakeArm

A100, ESV3 = "standardNCADSA100v4Family", "standardESv3Family"
INFRA = {
    "azure-native:location": "eastus2",
    "phi3-foundry:owner": "team@contoso.com",
    "phi3-foundry:expiresOn": "2027-01-31",
    "phi3-foundry:stages": '["infra"]',
}
TRAIN = INFRA | {
    "phi3-foundry:stages": '["infra", "train"]',
    "phi3-foundry:gpuSkus": '["Standard_NC48ads_A100_v4", "Standard_NC24ads_A100_v4"]',
    "phi3-foundry:trainingData": "scripts/data/capitals_chat.jsonl",
}
SERVE = INFRA | {
    "phi3-foundry:stages": '["infra", "serve"]',
    "phi3-foundry:modelReference": "azureml:phi3-ft:1",
    "phi3-foundry:imageBuild": "prebuilt",
    "phi3-foundry:serverImage": "phi3acr.azurecr.io/phi3-server:1",
}
GLOBAL = {
    "azure-native:storage:StorageAccount": "Microsoft.Storage/storageAccounts",
    "azure-native:containerregistry:Registry": "Microsoft.ContainerRegistry/registries",
    "azure-native:keyvault:Vault": "Microsoft.KeyVault/vaults",
}


def _main_program() -> dict[str, Any]:
    """`__main__.py` as `pulumi up` runs it; its outputs are exported, not returned."""
    program_main()
    return {}


@pytest.fixture
def fake_arm(tmp_path: Path) -> Iterator[FakeArm]:
    # The subscription the mocks' getClientConfig answers with, as `pulumi up` would see it.
    fake = FakeArm(subscription_id=offline.SUBSCRIPTION_ID)
    with fake.serving(tmp_path / "tls"):
        yield fake


def planned_global_names(registered: list[str]) -> tuple[str, dict[str, str]]:
    """The stack's resource group and global names by ARM type, as an unchecked plan has them."""
    run = offline.run_offline(
        build_stack, INFRA | {"phi3-foundry:skipPreflight": "true"}, "eastus2"
    )
    registered.clear()
    (group,) = run.of_type("azure-native:resources:ResourceGroup")
    names = {GLOBAL[r.type]: str(r.azure_name) for r in run.resources if r.type in GLOBAL}
    return str(group.azure_name), names


def test_passing_preflight_trains_on_the_first_size_that_fits(
    signed_in_env: FakeArm, registered: list[str]
) -> None:
    # 24 vCPUs of A100 quota: the 48-vCPU first choice cannot train, the 24-vCPU fallback can.
    signed_in_env.add_region("eastus2", quota={A100: (0, 24)})
    run = offline.run_offline(build_stack, TRAIN, "eastus2")
    assert run.outputs["gpuVmSize"] == "Standard_NC24ads_A100_v4"
    assert signed_in_env.calls_to("/usages") and signed_in_env.calls_to("/vmSizes")
    assert registered


def test_failing_preflight_registers_nothing_and_says_what_to_do(
    signed_in_env: FakeArm, registered: list[str]
) -> None:
    signed_in_env.add_region("eastus2", quota={A100: (0, 0)})
    with pytest.raises(PreflightFailed) as caught:
        offline.run_offline(build_stack, TRAIN, "eastus2")
    assert registered == []
    message = str(caught.value)
    assert "Standard NCADSA100v4 Family Cluster Dedicated vCPUs" in message
    assert "az quota" in message


def test_pulumi_sees_the_preflight_message_without_a_traceback(
    signed_in_env: FakeArm, registered: list[str]
) -> None:
    signed_in_env.add_region("eastus2", quota={A100: (0, 0)})
    with pytest.raises(pulumi.RunError, match="Cluster Dedicated vCPUs"):
        offline.run_offline(_main_program, TRAIN, "eastus2")
    assert registered == []


def test_an_infrastructure_stack_needs_no_gpu_quota(
    signed_in_env: FakeArm, registered: list[str]
) -> None:
    signed_in_env.add_region("eastus2", quota={A100: (0, 0)})
    run = offline.run_offline(build_stack, INFRA, "eastus2")
    assert registered and not signed_in_env.calls_to("/usages")
    assert signed_in_env.calls_to("/checkNameAvailability")
    assert run.outputs["gpuVmSize"] == "Standard_NC24ads_A100_v4"  # the first default, unchecked


def test_a_global_name_taken_elsewhere_stops_before_any_resource(
    signed_in_env: FakeArm, registered: list[str]
) -> None:
    _, names = planned_global_names(registered)
    storage = names["Microsoft.Storage/storageAccounts"]
    signed_in_env.take_name("Microsoft.Storage/storageAccounts", storage)
    with pytest.raises(PreflightFailed) as caught:
        offline.run_offline(build_stack, INFRA, "eastus2")
    assert registered == []
    message = str(caught.value)
    assert f"storage account name '{storage}' is taken" in message
    assert "phi3-foundry:nameGeneration" in message and "phi3-foundry:namePrefix" in message


def test_a_rerun_over_the_stacks_own_resources_passes(
    signed_in_env: FakeArm, registered: list[str]
) -> None:
    group, names = planned_global_names(registered)
    for resource_type, name in names.items():
        signed_in_env.create_resource(group, resource_type, name)
    offline.run_offline(build_stack, INFRA, "eastus2")
    assert registered


def test_a_bumped_generation_gets_fresh_names_past_a_taken_one(
    signed_in_env: FakeArm, registered: list[str]
) -> None:
    # The fix the message names works: every global name moves.
    _, names = planned_global_names(registered)
    for resource_type, name in names.items():
        signed_in_env.take_name(resource_type, name)
    offline.run_offline(build_stack, INFRA | {"phi3-foundry:nameGeneration": "1"}, "eastus2")
    assert registered


def test_serving_quota_short_stops_before_any_resource(
    signed_in_env: FakeArm, registered: list[str]
) -> None:
    # Default serving size Standard_E4s_v3 (ESv3, 4 vCPUs): 1 instance + reserve needs 8.
    signed_in_env.add_region("eastus2", quota={ESV3: (0, 4)})
    with pytest.raises(PreflightFailed) as caught:
        offline.run_offline(build_stack, SERVE, "eastus2")
    assert registered == []
    message = str(caught.value)
    assert "'Standard ESv3 Family Cluster Dedicated vCPUs' in eastus2: need 8 vCPUs" in message
    assert "20% upgrade reserve" in message
    (call,) = signed_in_env.calls_to("/deployments")  # the endpoint's deployments: none yet
    assert call.status == 404


def test_preflight_that_cannot_sign_in_stops_before_any_resource(
    signed_in_env: FakeArm, registered: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    signed_in_env.add_region("eastus2", quota={A100: (0, 96)})
    monkeypatch.setenv("FAKE_AZ_LOGGED_OUT", "1")
    with pytest.raises(PreflightUnavailable, match="az login"):
        offline.run_offline(build_stack, INFRA, "eastus2")
    assert registered == []


def test_skipped_preflight_warns_and_takes_the_first_candidate_unchecked(
    signed_in_env: FakeArm, registered: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    warnings: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *_, **__: warnings.append(message))
    config = TRAIN | {"phi3-foundry:skipPreflight": "true"}
    run = offline.run_offline(build_stack, config, "eastus2")
    # No quota, provider or name check; only the project is asked whether the job already
    # exists (tests/pipeline/test_stable_sizing.py), and here it does not.
    assert [call.path.rsplit("/", 2)[-2] for call in signed_in_env.calls] == ["jobs"]
    assert run.outputs["gpuVmSize"] == "Standard_NC48ads_A100_v4"
    assert any("skipPreflight is set" in warning for warning in warnings)


def test_the_request_follows_the_stages() -> None:
    # The size an existing training job ran on only matters to a stack that trains.
    sub = offline.SUBSCRIPTION_ID
    for flat, trains, serves in ((INFRA, False, False), (SERVE, False, True)):
        config = config_from_flat(flat)
        names = stack_names(config, PROJECT, "eastus2", sub)
        checked = check_inputs(config, names, sub)
        served = served_model(checked, None, nothing_served)
        request = preflight_request(checked, "Standard_NC24ads_A100_v4", served)
        assert (request.trains, request.serving is not None) == (trains, serves)
        assert request.unique_names == names.globally_unique()
        assert request.resource_group == names.resource_group
    # The deployment's name follows the model (tests/pipeline/test_rollout.py).
    assert request.serving is not None
    assert request.serving == ServingRequest(
        "Standard_E4s_v3",
        1,
        f"/subscriptions/{sub}/resourceGroups/{names.resource_group}/providers/"
        f"Microsoft.MachineLearningServices/workspaces/{names.project}/onlineEndpoints/"
        f"{names.online_endpoint}/deployments/{request.serving.deployment_name}",
    )


def test_a_stack_that_already_trained_keeps_its_size_without_quota(signed_in_env: FakeArm) -> None:
    # The quota is gone since the job ran: the stack keeps the size (no new job, no retraining)
    # instead of failing or moving to another candidate.
    signed_in_env.add_region("eastus2", quota={A100: (0, 0)})
    config = config_from_flat(TRAIN)
    names = stack_names(config, PROJECT, "eastus2", signed_in_env.subscription_id)
    checked = check_inputs(config, names, signed_in_env.subscription_id)
    kept = quota_preflight(checked, "Standard_NC24ads_A100_v4", None)
    assert (kept.vm_size, kept.checked, kept.vcpus_per_node, kept.gpus) == (
        "Standard_NC24ads_A100_v4",
        True,
        24,
        1,
    )
    with pytest.raises(PreflightFailed):
        quota_preflight(checked, None, None)


def test_incomplete_service_principal_settings_stop_an_infra_stack_without_a_traceback(
    signed_in_env: FakeArm, registered: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARM_CLIENT_SECRET", "not-printed-anywhere")
    with pytest.raises(pulumi.RunError, match="also needs ARM_TENANT_ID and ARM_CLIENT_ID") as err:
        offline.run_offline(_main_program, INFRA, "eastus2")
    assert "not-printed-anywhere" not in str(err.value)
    assert registered == []
