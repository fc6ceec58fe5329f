"""Endpoint traffic: set to 100% once the deployment exists, back to 0% before it is deleted."""

from __future__ import annotations

from typing import Any

import pytest

from phi3_infra.azure.arm import ArmClient, OperationTimedOut, Poll
from phi3_infra.azure.traffic import set_endpoint_traffic
from phi3_infra.steps import endpoint_traffic
from phi3_infra.steps.endpoint_traffic import _EndpointTrafficProvider
from tests.fakes.arm_pipeline import PipelineArm
from tests.fakes.arm_server import SUBSCRIPTION_ID, FakeArm

ENDPOINT_ID = (
    f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/rg/providers/"
    "Microsoft.MachineLearningServices/workspaces/proj/onlineEndpoints/ep-phi3-1234abcd"
)
FAST = Poll(timeout_s=5, interval_s=0.01)


def _endpoint(pipeline: PipelineArm) -> dict[str, Any]:
    endpoint = {
        "location": "eastus2",
        "identity": {"type": "UserAssigned", "userAssignedIdentities": {"/id": {}}},
        "tags": {"stack": "eastus2"},
        "properties": {"authMode": "Key", "traffic": {}, "provisioningState": "Succeeded"},
    }
    pipeline.endpoints["ep-phi3-1234abcd"] = endpoint
    return endpoint


def test_traffic_is_put_back_with_the_rest_of_the_endpoint(
    pipeline_arm: PipelineArm, arm_client: ArmClient
) -> None:
    _endpoint(pipeline_arm)
    final = set_endpoint_traffic(arm_client, ENDPOINT_ID, {"phi3": 100}, FAST)
    assert final["properties"]["traffic"] == {"phi3": 100}
    assert final["properties"]["provisioningState"] == "Succeeded"
    stored = pipeline_arm.endpoints["ep-phi3-1234abcd"]
    assert stored["identity"]["type"] == "UserAssigned"  # nothing else lost in the PUT
    assert stored["properties"]["authMode"] == "Key"


def test_a_traffic_update_that_outlasts_the_wait_says_what_to_do(
    pipeline_arm: PipelineArm, arm_client: ArmClient
) -> None:
    _endpoint(pipeline_arm)
    # The first look after the PUT still says Updating; a zero timeout gives up there.
    with pytest.raises(OperationTimedOut) as caught:
        set_endpoint_traffic(
            arm_client, ENDPOINT_ID, {"phi3": 100}, Poll(timeout_s=0, interval_s=1)
        )
    message = str(caught.value)
    assert "traffic update of ep-phi3-1234abcd still Updating" in message
    assert "Run `pulumi up` again once the endpoint's provisioning state" in message
    # The training settings do nothing for an endpoint.
    assert "trainingTimeoutMinutes" not in message
    assert "waitForTraining" not in message


def test_delete_takes_traffic_away_and_tolerates_a_gone_endpoint(
    signed_in_env: FakeArm,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(endpoint_traffic, "TRAFFIC_POLL", Poll(timeout_s=900, interval_s=0.01))
    pipeline = PipelineArm(signed_in_env).install()
    _endpoint(pipeline)["properties"]["traffic"] = {"phi3": 100}
    props = {"endpoint_id": ENDPOINT_ID, "deployment_name": "phi3"}
    _EndpointTrafficProvider().delete(ENDPOINT_ID, props)
    assert pipeline.endpoints["ep-phi3-1234abcd"]["properties"]["traffic"] == {}
    del pipeline.endpoints["ep-phi3-1234abcd"]
    _EndpointTrafficProvider().delete(ENDPOINT_ID, props)  # no error
