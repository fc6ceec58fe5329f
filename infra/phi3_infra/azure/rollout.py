"""The rollout check: what stands between a new deployment and the traffic switch (blue/green).

Azure ML's safe rollout (MicrosoftDocs/azure-ai-docs articles/machine-learning/
how-to-safely-rollout-online-endpoints.md): deploy the new model as a second deployment of the
endpoint with no traffic, test it alone ("set the following HTTP header: `azureml-model-deployment:
<deployment-name>`" to invoke it "without going through traffic rules"), then send all traffic to
it, then delete the old one ("You cannot delete a deployment that has live traffic allocated to
it"). The program declares that order (components/serving.py); the rollout check
(steps/rollout_check.py) is the test, created after the new deployment, and the traffic update
depends on it:

1. the deployment is provisioned Succeeded. Azure ML fails a deployment whose readiness probe
   keeps failing past its failure threshold (how-to-troubleshoot-online-endpoints.md, "ERROR:
   ResourceNotReady"; reference-yaml-deployment-managed-online.md, ProbeSettings), so Succeeded
   means the container passed it;
2. one chat request to the endpoint's scoring URI, routed to the new deployment by that header and
   signed with the endpoint's key (OnlineEndpoints_ListKeys) or, in aadToken mode, an Entra token
   for https://ml.azure.com (how-to-authenticate-online-endpoint.md), answers a chat reply.

If either fails, the check raises with the reason: the engine stops the update there
(pulumi/pulumi pkg/resource/deploy/step_executor.go `cancelDueToError`), so the traffic update
never runs and the old deployment, still serving 100%, is not deleted (deletes of resources the
program no longer declares run only after every step succeeded: deployment_executor.go
`Execute` -> `performPostSteps` -> step_generator.go `GenerateDeletes`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import requests
from azure.core.exceptions import ClientAuthenticationError

from phi3_infra.azure.api_versions import ML_API_VERSION
from phi3_infra.azure.arm import ArmClient, Poll
from phi3_infra.azure.credentials import credential_from_environment
from phi3_infra.azure.waiting import PROVISIONING_ENDED, poll_until_terminal
from phi3_infra.config import EndpointAuthMode

DEPLOYMENT_HEADER = "azureml-model-deployment"
MODEL_ERROR_STATUS = "ms-azureml-model-error-statuscode"
ML_DATA_PLANE_SCOPE = "https://ml.azure.com/.default"

# The portal's chat body for the scoring route, answered with {"output": "<reply>"}
# (serving_image/phi3_server/schemas.py ChatScoreRequest, app.py `score`).
SMOKE_PROMPT = "What is the capital of France? Answer in one word."
SMOKE_MAX_NEW_TOKENS = 16
_CONNECT_TIMEOUT_S = 30
_EXCERPT_CHARS = 300


class RolloutFailed(RuntimeError):
    """The new deployment did not pass the check; traffic was not moved."""


@dataclass(frozen=True)
class RolloutTarget:
    """The new deployment, by its ARM id (.../onlineEndpoints/{endpoint}/deployments/{name})."""

    deployment_id: str
    auth_mode: EndpointAuthMode
    request_timeout_s: int

    @property
    def endpoint_id(self) -> str:
        return self.deployment_id.rsplit("/deployments/", 1)[0]

    def _part(self, after: str) -> str:
        parts = self.deployment_id.split("/")
        return parts[parts.index(after) + 1]

    @property
    def name(self) -> str:
        return self._part("deployments")

    @property
    def endpoint_name(self) -> str:
        return self._part("onlineEndpoints")

    def logs_advice(self) -> str:
        return (
            f"Its logs: az ml online-deployment get-logs --name {self.name} --endpoint-name "
            f"{self.endpoint_name} --resource-group {self._part('resourceGroups')} "
            f"--workspace-name {self._part('workspaces')} --lines 200 (studio: Endpoints > "
            f"{self.endpoint_name} > Logs, deployment {self.name})."
        )


def smoke_body() -> dict[str, Any]:
    return {
        "input_data": {
            "input_string": [{"role": "user", "content": SMOKE_PROMPT}],
            "parameters": {"max_new_tokens": SMOKE_MAX_NEW_TOKENS},
        }
    }


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _EXCERPT_CHARS else text[:_EXCERPT_CHARS] + "..."


def _status_hint(response: requests.Response) -> str:
    status = response.status_code
    if status in (401, 403):
        return "the endpoint refused the credential"
    if status == 404:
        return "the endpoint has no deployment by that name, or the scoring path is wrong"
    if status == 424:
        # The endpoint's answer when the container answered other than 200, which it names in
        # this header (how-to-troubleshoot-online-endpoints.md, "HTTP status codes").
        container = response.headers.get(MODEL_ERROR_STATUS, "an error")
        return f"the container itself answered {container}; its answer is the body"
    if status == 429:
        return "the deployment is at its request limit"
    return "the deployment could not answer"


def scoring_credential(client: ArmClient, target: RolloutTarget) -> str:
    """The bearer value the endpoint takes: its primary key, or an Entra token (aadToken)."""
    if target.auth_mode is EndpointAuthMode.AAD_TOKEN:
        try:
            return credential_from_environment().get_token(ML_DATA_PLANE_SCOPE).token
        except ClientAuthenticationError as error:
            raise RolloutFailed(
                f"could not get an Entra token for {ML_DATA_PLANE_SCOPE} to call endpoint "
                f"{target.endpoint_name}: {error.message}"
            ) from None
    keys = client.post_json(f"{target.endpoint_id}/listKeys", ML_API_VERSION)
    return str(keys["primaryKey"])


def smoke_reply(scoring_uri: str, target: RolloutTarget, credential: str) -> str:
    """POST one chat to the new deployment alone; its reply, or RolloutFailed with the reason."""
    where = f"POST {scoring_uri} ({DEPLOYMENT_HEADER}: {target.name})"
    headers = {"Authorization": f"Bearer {credential}", DEPLOYMENT_HEADER: target.name}
    try:
        response = requests.post(
            scoring_uri,
            json=smoke_body(),
            headers=headers,
            timeout=(_CONNECT_TIMEOUT_S, target.request_timeout_s + _CONNECT_TIMEOUT_S),
        )
    except requests.RequestException as error:
        raise RolloutFailed(f"the smoke request {where} got no answer: {error}") from None
    if response.status_code != 200:
        raise RolloutFailed(
            f"the smoke request {where} answered {response.status_code} "
            f"({_status_hint(response)}): {_excerpt(response.text)}"
        )
    try:
        reply = response.json().get("output")
    except (ValueError, AttributeError):
        reply = None
    if not isinstance(reply, str) or not reply.strip():
        raise RolloutFailed(
            f'the smoke request {where} answered 200 but not a chat reply (expected {{"output": '
            f'"<text>"}}): {_excerpt(response.text)}'
        )
    return reply


def check_rollout(client: ArmClient, target: RolloutTarget, poll: Poll) -> str:
    """Provisioned Succeeded, then one smoke chat: the deployment's reply, or RolloutFailed
    saying why and what still serves."""
    endpoint = client.get_json(target.endpoint_id, ML_API_VERSION)["properties"]
    traffic = json.dumps(endpoint.get("traffic") or {}, sort_keys=True)
    try:
        deployment = poll_until_terminal(
            client,
            target.deployment_id,
            ML_API_VERSION,
            PROVISIONING_ENDED,
            poll,
            f"deployment {target.name}",
            advice=f"Run `pulumi up` again once it is Succeeded. {target.logs_advice()}",
            status_key="provisioningState",
        )
        state = deployment["properties"]["provisioningState"]
        if state != "Succeeded":
            raise RolloutFailed(
                f"Azure reports it {state}: a deployment is Succeeded only once its container "
                "passes the readiness probe (ResourceNotReady when it never does)"
            )
        credential = scoring_credential(client, target)
        reply = smoke_reply(str(endpoint["scoringUri"]), target, credential)
    except RolloutFailed as failure:
        raise RolloutFailed(
            f"rollout of deployment {target.name} on endpoint {target.endpoint_name} stopped "
            f"before the traffic switch: {failure}. Traffic stays as it is ({traffic}). "
            f"{target.logs_advice()} Fix the cause and run `pulumi up` again (the check runs "
            "again), or go back to the model served before (the new deployment is then removed)."
        ) from None
    return reply
