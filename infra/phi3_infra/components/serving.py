"""Serving: a managed online endpoint whose model is rolled out blue/green.

Each served (model, server environment) pair is its own deployment, named after both
(`deployment_name`) and declared as its own resource (`online-deployment-<name>`). A new model is
therefore a new deployment next to the one serving, never an in-place update of it:

1. the new deployment is created (Azure waits for its readiness probe);
2. `RolloutCheck` (steps/rollout_check.py) confirms it is provisioned and answers one chat sent
   to it alone;
3. `EndpointTraffic`, which depends on the check, is updated in place to put 100% on it;
4. the old deployment, no longer declared, is deleted by the engine after every step succeeded
   (pulumi/pulumi pkg/resource/deploy/deployment_executor.go `performPostSteps`), by which time
   it has no traffic (Azure refuses to delete a deployment that has: how-to-safely-rollout-online-
   endpoints.md, "Remove the old deployment").

A failed step stops the update before 3, so the old deployment keeps 100%. Per-deployment logical
names matter: changing the Azure name of one logical deployment would be a create-before-delete
replacement, after which the engine marks the old object pending deletion (`Delete: true`,
pkg/resource/deploy/step.go CreateStep.Apply) and deletes it at the end of the next successful
update whatever the program then declares (step_generator.go `GenerateDeletes`), even a rollback
to it. A separate logical resource stays an ordinary one until the program stops declaring it.

The endpoint and its deployments depend on each other (traffic names a deployment, a deployment
needs its endpoint), so the endpoint is created without traffic; `EndpointTraffic` is replaced
only with the endpoint, and its delete takes traffic to 0% before `pulumi destroy` deletes the
deployment.

The server reads its limits from `PHI3_SERVER_*` variables set here from the same config values
as the deployment's request settings, so the two cannot drift.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict

import pulumi
from pulumi_azure_native import machinelearningservices as ml

from phi3_infra.components.identity import runs_as
from phi3_infra.components.immutable import asset_version_options
from phi3_infra.config import EndpointAuthMode
from phi3_infra.steps.endpoint_traffic import EndpointTraffic
from phi3_infra.steps.rollout_check import RolloutCheck

SERVER_ENVIRONMENT = "phi3-server"
DEPLOYMENT_PREFIX = "phi3-"
_DEPLOYMENT_HASH_LENGTH = 12
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


@dataclass(frozen=True)
class EndpointSettings:
    """How the endpoint serves: its region, sign-in, size and request limits."""

    location: str
    auth_mode: EndpointAuthMode
    instance_type: str
    instance_count: int
    request_timeout_s: int
    max_concurrent_requests: int


def server_environment_variables(settings: EndpointSettings) -> dict[str, str]:
    """The server's own limits, from the values the deployment's request settings use."""
    return {
        "PHI3_SERVER_REQUEST_TIMEOUT": str(settings.request_timeout_s),
        "PHI3_SERVER_MAX_CONCURRENT_REQUESTS": str(settings.max_concurrent_requests),
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


@dataclass(frozen=True)
class ServedModel:
    """A registered model version to serve, known when the program is planned; `depends_on`:
    what must exist before a deployment uses it (the registration, when this run makes it)."""

    name: str
    version: str
    depends_on: Sequence[pulumi.Resource] = ()

    @property
    def reference(self) -> str:
        return f"azureml:{self.name}:{self.version}"


def deployment_name(model: ServedModel, environment_version: str) -> str:
    """The Azure name of the deployment serving `model` with that server environment version.
    Deployment names "begin with a letter, be 3-32 characters in length, only consist of letters
    and numbers" with single dashes accepted (MicrosoftDocs/azure-ai-docs articles/
    machine-learning/how-to-manage-quotas.md, "Azure Machine Learning online endpoints and batch
    endpoints"): `phi3-` and 12 hex digits of a hash of the three."""
    canonical = json.dumps([model.name, model.version, environment_version])
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:_DEPLOYMENT_HASH_LENGTH]
    return f"{DEPLOYMENT_PREFIX}{digest}"


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
    settings: EndpointSettings
    endpoint_name: str
    server_image_identity: str  # content tag or pinned reference: the environment's version
    server_image_ref: pulumi.Input[str]
    model: ServedModel | None  # None: nothing to serve yet, the endpoint alone
    project_id: pulumi.Input[str]  # the model's workspace
    resource_group_name: pulumi.Input[str]
    workspace_name: pulumi.Input[str]
    identity_id: pulumi.Input[str]
    tags: Mapping[str, str]
    # What the deployment needs besides its model (the endpoint identity's grants, the image).
    depends_on: Sequence[pulumi.Resource]


class ServingEndpoint(pulumi.ComponentResource):
    endpoint: ml.OnlineEndpoint
    deployment: ml.OnlineDeployment | None
    traffic: EndpointTraffic | None
    scoring_uri: pulumi.Output[str]
    openai_base_url: pulumi.Output[str]
    primary_key: pulumi.Output[str] | None

    def __init__(
        self, name: str, args: ServingArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("phi3:serving:ServingEndpoint", name, None, opts)
        settings = args.settings
        in_workspace = _InWorkspace(
            resource_group_name=args.resource_group_name, workspace_name=args.workspace_name
        )
        route = {"port": SERVER_PORT}
        environment_version = server_environment_version(args.server_image_identity)
        environment = ml.EnvironmentVersion(
            "server-environment",
            name=SERVER_ENVIRONMENT,
            version=environment_version,
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
            location=settings.location,
            tags=dict(args.tags),
            identity=runs_as(args.identity_id),
            properties=ml.OnlineEndpointPropertiesArgs(
                auth_mode=_AUTH_MODES[settings.auth_mode],
                description="Fine-tuned Phi-3 (OpenAI-compatible under /v1, reference /score)",
            ),
            # Traffic belongs to EndpointTraffic below; a refresh must not take it back.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["properties.traffic"]),
            **in_workspace,
        )
        self.deployment, self.traffic = None, None
        if args.model is not None:
            self._roll_out(args, args.model, environment, environment_version, in_workspace)
        self.scoring_uri = self.endpoint.properties.apply(lambda p: str(p.scoring_uri))
        self.openai_base_url = self.scoring_uri.apply(openai_base_url)
        self.primary_key = None
        self.secondary_key: pulumi.Output[str] | None = None
        if settings.auth_mode is EndpointAuthMode.KEY:
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

    def _roll_out(
        self,
        args: ServingArgs,
        model: ServedModel,
        environment: ml.EnvironmentVersion,
        environment_version: str,
        in_workspace: _InWorkspace,
    ) -> None:
        """The model's own deployment, its check, then traffic on it (the module's docstring)."""
        settings = args.settings
        name = deployment_name(model, environment_version)
        self.deployment = ml.OnlineDeployment(
            f"online-deployment-{name}",
            endpoint_name=self.endpoint.name,
            deployment_name=name,
            location=settings.location,
            tags=dict(args.tags),
            sku=ml.SkuArgs(name="Default", capacity=settings.instance_count),
            properties=ml.ManagedOnlineDeploymentArgs(
                endpoint_compute_type="Managed",
                description=f"{model.reference} on {SERVER_ENVIRONMENT}:{environment_version}",
                model=pulumi.Output.concat(
                    args.project_id, f"/models/{model.name}/versions/{model.version}"
                ),
                environment_id=environment.id,
                instance_type=settings.instance_type,
                environment_variables=server_environment_variables(settings),
                request_settings=ml.OnlineRequestSettingsArgs(
                    request_timeout=f"PT{settings.request_timeout_s}S",
                    max_concurrent_requests_per_instance=settings.max_concurrent_requests,
                ),
                # Loading a 3.8B model on CPU takes minutes: readiness waits up to 20 minutes.
                liveness_probe=_probe(initial_delay_s=60, failure_threshold=30),
                readiness_probe=_probe(initial_delay_s=30, failure_threshold=120),
                scale_settings=ml.DefaultScaleSettingsArgs(scale_type="Default"),
                app_insights_enabled=True,
            ),
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[*model.depends_on, *args.depends_on]
            ),
            **in_workspace,
        )
        check = RolloutCheck(
            f"rollout-check-{name}",
            deployment_id=self.deployment.id,
            auth_mode=settings.auth_mode,
            request_timeout_s=settings.request_timeout_s,
            opts=pulumi.ResourceOptions(parent=self),
        )
        # One logical name across rollouts: a new deployment updates it, never replaces it
        # (a replacement's delete would take all traffic away).
        self.traffic = EndpointTraffic(
            "endpoint-traffic",
            endpoint_id=self.endpoint.id,
            deployment_name=name,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.deployment, check]),
        )
