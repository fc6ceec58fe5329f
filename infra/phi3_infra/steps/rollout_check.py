"""The rollout check as a dynamic step: created after the new deployment, and the traffic
update depends on it (phi3_infra.azure.rollout says what it checks, and why a failure leaves the
old deployment serving)."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi.dynamic

from phi3_infra.azure.arm import Poll, client_from_environment
from phi3_infra.azure.rollout import RolloutTarget, check_rollout
from phi3_infra.config import EndpointAuthMode
from phi3_infra.steps.base import Step

# Azure's own wait for a deployment has ended when this runs (azure-native waits for the create);
# this bounds a re-run that finds one still Creating or Updating.
PROVISION_POLL = Poll(timeout_s=1800, interval_s=15.0)


class _RolloutCheckProvider(Step):
    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        target = RolloutTarget(
            deployment_id=props["deployment_id"],
            auth_mode=EndpointAuthMode(props["auth_mode"]),
            request_timeout_s=int(props["request_timeout_s"]),
        )
        with client_from_environment() as client:
            check_rollout(client, target, PROVISION_POLL)
        return pulumi.dynamic.CreateResult(id_=target.deployment_id, outs=props)

    # One check per deployment: a deployment that serves already is not checked again.
    replaced_by = ("deployment_id",)


class RolloutCheck(pulumi.dynamic.Resource):
    def __init__(
        self,
        name: str,
        *,
        deployment_id: pulumi.Input[str],
        auth_mode: EndpointAuthMode,
        request_timeout_s: int,
        opts: pulumi.ResourceOptions,
    ) -> None:
        props = {
            "deployment_id": deployment_id,
            "auth_mode": auth_mode.value,
            "request_timeout_s": request_timeout_s,
        }
        super().__init__(_RolloutCheckProvider(), name, props, opts)
