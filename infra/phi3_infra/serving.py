"""Serving: a managed online endpoint with one deployment of the server image and the model.

The endpoint and its deployment depend on each other (traffic names a deployment, a deployment
needs its endpoint), so the endpoint is created without traffic and a small dynamic resource sets
100% on the deployment once it exists, and takes it back to 0% before the deployment is deleted
(Azure refuses to delete a deployment that still receives traffic).

The server reads its limits from `PHI3_SERVER_*` variables set here from the same config values
as the deployment's request settings, so the two cannot drift.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import pulumi
import pulumi.dynamic
from pulumi_azure_native import machinelearningservices as ml

from phi3_infra.arm import ArmClient, ArmNotFoundError, client_from_environment
from phi3_infra.config import EndpointAuthMode, StackConfig
from phi3_infra.dynamic import replace_when_changed
from phi3_infra.identity import runs_as
from phi3_infra.immutable import asset_version_options
from phi3_infra.waiting import ML_API_VERSION, OperationFailed, Poll, poll_until_terminal

SERVER_ENVIRONMENT = "phi3-server"
DEPLOYMENT_NAME = "phi3"
# The server image listens here and answers these routes (serving_image/phi3_server).
SERVER_PORT = 5001
LIVENESS_PATH = "/health"
READINESS_PATH = "/ready"
SCORING_PATH = "/score"
OPENAI_PATH = "/v1"
_AUTH_MODES = {
    EndpointAuthMode.KEY: ml.EndpointAuthMode.KEY,
    EndpointAuthMode.AAD_TOKEN: ml.EndpointAuthMode.AAD_TOKEN,
}
_PROVISIONED = frozenset({"Succeeded", "Failed", "Canceled"})
_TRAFFIC_TIMEOUT_S = 900
TRAFFIC_POLL_S = 10.0


def server_environment_variables(config: StackConfig) -> dict[str, str]:
    """The server's own limits, from the values the deployment's request settings use."""
    return {
        "PHI3_SERVER_REQUEST_TIMEOUT": str(config.request_timeout_seconds),
        "PHI3_SERVER_MAX_CONCURRENT_REQUESTS": str(config.max_concurrent_requests),
    }


def server_environment_version(image_identity: str) -> str:
    """The version names everything the environment holds, the image and the routes the endpoint
    forwards to: a version cannot change once registered (immutable.py), so a changed route
    (Serving in infra/README.md) is a new version."""
    canonical = json.dumps(
        {
            "image": image_identity,
            "port": SERVER_PORT,
            "routes": [LIVENESS_PATH, READINESS_PATH, SCORING_PATH],
        }
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def openai_base_url(scoring_uri: str) -> str:
    """`https://<endpoint>.<region>.inference.ml.azure.com/score` -> `.../v1`."""
    return scoring_uri.removesuffix(SCORING_PATH) + OPENAI_PATH


class _InWorkspace(TypedDict):
    resource_group_name: pulumi.Input[str]
    workspace_name: pulumi.Input[str]


def _probe(*, initial_delay_s: int, failure_threshold: int) -> ml.ProbeSettingsArgs:
    return ml.ProbeSettingsArgs(
        initial_delay=f"PT{initial_delay_s}S",
        period="PT10S",
        timeout="PT5S",
        success_threshold=1,
        failure_threshold=failure_threshold,
    )


@dataclass(frozen=True)
class ServingArgs:
    config: StackConfig
    endpoint_name: str
    server_image_identity: str  # content tag or pinned reference: the environment's version
    server_image_ref: pulumi.Input[str]
    model_id: pulumi.Input[str]  # ARM id of the model version
    resource_group_name: pulumi.Input[str]
    workspace_name: pulumi.Input[str]
    identity_id: pulumi.Input[str]
    tags: Mapping[str, str]
    depends_on: Sequence[pulumi.Resource]  # what must exist before the deployment (the model)


class ServingEndpoint(pulumi.ComponentResource):
    endpoint: ml.OnlineEndpoint
    deployment: ml.OnlineDeployment
    scoring_uri: pulumi.Output[str]
    openai_base_url: pulumi.Output[str]
    primary_key: pulumi.Output[str] | None

    def __init__(
        self, name: str, args: ServingArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("phi3:serving:ServingEndpoint", name, None, opts)
        config = args.config
        in_workspace = _InWorkspace(
            resource_group_name=args.resource_group_name, workspace_name=args.workspace_name
        )
        route = {"port": SERVER_PORT}
        environment = ml.EnvironmentVersion(
            "server-environment",
            name=SERVER_ENVIRONMENT,
            version=server_environment_version(args.server_image_identity),
            properties=ml.EnvironmentVersionPropertiesArgs(
                image=args.server_image_ref,
                os_type=ml.OperatingSystemType.LINUX,
                description="Phi-3 server (python -m phi3_server)",
                tags=dict(args.tags),
                inference_config=ml.InferenceContainerPropertiesArgs(
                    liveness_route=ml.RouteArgs(path=LIVENESS_PATH, **route),
                    readiness_route=ml.RouteArgs(path=READINESS_PATH, **route),
                    scoring_route=ml.RouteArgs(path=SCORING_PATH, **route),
                ),
            ),
            opts=asset_version_options(self),
            **in_workspace,
        )
        self.endpoint = ml.OnlineEndpoint(
            "online-endpoint",
            endpoint_name=args.endpoint_name,
            location=config.location,
            tags=dict(args.tags),
            identity=runs_as(args.identity_id),
            properties=ml.OnlineEndpointPropertiesArgs(
                auth_mode=_AUTH_MODES[config.endpoint_auth_mode],
                description="Fine-tuned Phi-3 (OpenAI-compatible under /v1, reference /score)",
            ),
            # Traffic belongs to EndpointTraffic below; a refresh must not take it back.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["properties.traffic"]),
            **in_workspace,
        )
        self.deployment = ml.OnlineDeployment(
            "online-deployment",
            endpoint_name=self.endpoint.name,
            deployment_name=DEPLOYMENT_NAME,
            location=config.location,
            tags=dict(args.tags),
            sku=ml.SkuArgs(name="Default", capacity=config.serving_instance_count),
            properties=ml.ManagedOnlineDeploymentArgs(
                endpoint_compute_type="Managed",
                model=args.model_id,
                environment_id=environment.id,
                instance_type=config.serving_instance_type,
                environment_variables=server_environment_variables(config),
                request_settings=ml.OnlineRequestSettingsArgs(
                    request_timeout=f"PT{config.request_timeout_seconds}S",
                    max_concurrent_requests_per_instance=config.max_concurrent_requests,
                ),
                # Loading a 3.8B model on CPU takes minutes: readiness waits up to 20 minutes.
                liveness_probe=_probe(initial_delay_s=60, failure_threshold=30),
                readiness_probe=_probe(initial_delay_s=30, failure_threshold=120),
                scale_settings=ml.DefaultScaleSettingsArgs(scale_type="Default"),
                app_insights_enabled=True,
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on)),
            **in_workspace,
        )
        self.traffic = EndpointTraffic(
            "endpoint-traffic",
            endpoint_id=self.endpoint.id,
            deployment_name=self.deployment.name,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.deployment]),
        )
        self.scoring_uri = self.endpoint.properties.apply(lambda p: str(p.scoring_uri))
        self.openai_base_url = self.scoring_uri.apply(openai_base_url)
        self.primary_key = None
        self.secondary_key: pulumi.Output[str] | None = None
        if config.endpoint_auth_mode is EndpointAuthMode.KEY:
            keys = ml.list_online_endpoint_keys_output(
                endpoint_name=self.endpoint.name,
                opts=pulumi.InvokeOutputOptions(parent=self, depends_on=[self.endpoint]),
                **in_workspace,
            )
            self.primary_key = pulumi.Output.secret(keys.primary_key)
            self.secondary_key = pulumi.Output.secret(keys.secondary_key)
        self.register_outputs(
            {"scoringUri": self.scoring_uri, "openAiBaseUrl": self.openai_base_url}
        )


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
        _PROVISIONED,
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


class _EndpointTrafficProvider(pulumi.dynamic.ResourceProvider):
    def _apply(self, props: dict[str, Any], traffic: dict[str, int]) -> None:
        with client_from_environment() as client:
            set_endpoint_traffic(
                client,
                props["endpoint_id"],
                traffic,
                Poll(timeout_s=_TRAFFIC_TIMEOUT_S, interval_s=TRAFFIC_POLL_S),
            )

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        self._apply(props, {props["deployment_name"]: 100})
        return pulumi.dynamic.CreateResult(id_=props["endpoint_id"], outs=props)

    def diff(
        self, _id: str, olds: dict[str, Any], news: dict[str, Any]
    ) -> pulumi.dynamic.DiffResult:
        return replace_when_changed(olds, news, ("endpoint_id", "deployment_name"))

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
