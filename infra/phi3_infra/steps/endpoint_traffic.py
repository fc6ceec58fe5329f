"""The endpoint's traffic switch (blue/green), as a dynamic step."""

from __future__ import annotations

import contextlib
from typing import Any

import pulumi
import pulumi.dynamic

from phi3_infra.azure.arm import ArmNotFoundError, Poll, client_from_environment
from phi3_infra.azure.traffic import set_endpoint_traffic
from phi3_infra.steps.base import Step

TRAFFIC_POLL = Poll(timeout_s=900, interval_s=10.0)


class _EndpointTrafficProvider(Step):
    def _apply(self, props: dict[str, Any], traffic: dict[str, int]) -> None:
        with client_from_environment() as client:
            set_endpoint_traffic(client, props["endpoint_id"], traffic, TRAFFIC_POLL)

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        self._apply(props, {props["deployment_name"]: 100})
        return pulumi.dynamic.CreateResult(id_=props["endpoint_id"], outs=props)

    def update(
        self, _id: str, olds: dict[str, Any], news: dict[str, Any]
    ) -> pulumi.dynamic.UpdateResult:
        # {new: 100} alone: the deployment that served before gets 0% and can then be deleted.
        self._apply(news, {news["deployment_name"]: 100})
        return pulumi.dynamic.UpdateResult(outs=news)

    replaced_by = ("endpoint_id",)
    updated_by = ("deployment_name",)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        # An endpoint that is already gone took its traffic with it.
        with contextlib.suppress(ArmNotFoundError):
            self._apply(props, {})


class EndpointTraffic(pulumi.dynamic.Resource):
    def __init__(
        self,
        name: str,
        *,
        endpoint_id: pulumi.Input[str],
        deployment_name: pulumi.Input[str],
        opts: pulumi.ResourceOptions,
    ) -> None:
        props = {"endpoint_id": endpoint_id, "deployment_name": deployment_name}
        super().__init__(_EndpointTrafficProvider(), name, props, opts)
