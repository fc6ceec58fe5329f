"""An online endpoint's traffic split, set through ARM and waited for."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from phi3_infra.azure.api_versions import ML_API_VERSION
from phi3_infra.azure.arm import ArmClient, OperationFailed, Poll
from phi3_infra.azure.waiting import PROVISIONING_ENDED, poll_until_terminal


def set_endpoint_traffic(
    client: ArmClient, endpoint_id: str, traffic: Mapping[str, int], poll: Poll
) -> dict[str, Any]:
    """PUT the endpoint back with `traffic` (ARM's PATCH takes only tags and identity) and wait
    until it is provisioned."""
    endpoint = client.get_json(endpoint_id, ML_API_VERSION)
    properties = {**endpoint["properties"], "traffic": dict(traffic)}
    kept: tuple[str, ...] = ("location", "identity", "tags", "kind")
    body: dict[str, Any] = {key: endpoint[key] for key in kept if key in endpoint}
    client.put_json(endpoint_id, ML_API_VERSION, {**body, "properties": properties})
    final = poll_until_terminal(
        client,
        endpoint_id,
        ML_API_VERSION,
        PROVISIONING_ENDED,
        poll,
        f"traffic update of {endpoint_id.rsplit('/', 1)[-1]}",
        advice=(
            "Run `pulumi up` again once the endpoint's provisioning state (studio > Endpoints) "
            "is Succeeded; it puts the same traffic again."
        ),
        status_key="provisioningState",
    )
    state = final["properties"]["provisioningState"]
    if state != "Succeeded":
        raise OperationFailed(f"traffic update of {endpoint_id} ended {state}")
    return dict(final)
