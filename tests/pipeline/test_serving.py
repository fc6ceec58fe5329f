"""The endpoint and deployment as `pulumi up` would create them."""

from __future__ import annotations

import pytest

from phi3_infra.tooling.offline import OfflineRun
from phi3_server.settings import Settings
from tests.pipeline.conftest import Plan
from tests.pipeline.serving_plan import served_deployment


def test_keys_are_secret_outputs_and_nothing_else_is(full_run: OfflineRun) -> None:
    assert full_run.secret_outputs == {"primaryKey", "secondaryKey"}
    assert full_run.outputs["endpointAuthMode"] == "key"
    assert full_run.outputs["primaryKey"] != full_run.outputs["secondaryKey"]


def test_entra_id_auth_has_no_keys(plan: Plan) -> None:
    run = plan(endpointAuthMode="aadToken")
    assert run.named("online-endpoint").inputs["properties"]["authMode"] == "AADToken"
    assert run.secret_outputs == set()
    assert "primaryKey" not in run.outputs


def test_endpoint_runs_as_its_own_identity_and_exports_its_urls(full_run: OfflineRun) -> None:
    endpoint = full_run.named("online-endpoint")
    assert endpoint.inputs["identity"] == {
        "type": "UserAssigned",
        "userAssignedIdentities": [full_run.named("endpoint-identity").id],
    }
    name = endpoint.azure_name
    assert full_run.outputs["scoringUri"] == f"https://{name}.eastus2.inference.ml.azure.com/score"
    assert full_run.outputs["openAiBaseUrl"] == f"https://{name}.eastus2.inference.ml.azure.com/v1"


def test_deployment_serves_the_trained_model_with_the_server_image(full_run: OfflineRun) -> None:
    deployment = served_deployment(full_run).inputs
    properties = deployment["properties"]
    assert properties["model"] == full_run.named("model").id
    assert properties["environmentId"] == full_run.named("server-environment").id
    assert properties["instanceType"] == "Standard_E4s_v3"
    assert deployment["sku"] == {"name": "Default", "capacity": 1}
    environment = full_run.named("server-environment").inputs["properties"]
    assert environment["image"] == full_run.outputs["serverImage"]
    assert environment["inferenceConfig"] == {
        "livenessRoute": {"path": "/health", "port": 5001},
        "readinessRoute": {"path": "/ready", "port": 5001},
        "scoringRoute": {"path": "/score", "port": 5001},
    }


def test_request_limits_reach_azure_and_the_server_alike(
    plan: Plan, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = plan(requestTimeoutSeconds="120", maxConcurrentRequests="6")
    properties = served_deployment(run).inputs["properties"]
    settings_sent = properties["requestSettings"]
    assert settings_sent["requestTimeout"] == "PT120S"
    assert settings_sent["maxConcurrentRequestsPerInstance"] == 6
    # The variables must be ones the server reads, with the values Azure enforces.
    for name, value in properties["environmentVariables"].items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.request_timeout == 120
    assert settings.max_concurrent_requests == 6
    assert settings.port == 5001  # the port the inference routes name


def test_probes_give_a_cpu_model_load_time(full_run: OfflineRun) -> None:
    properties = served_deployment(full_run).inputs["properties"]
    readiness, liveness = properties["readinessProbe"], properties["livenessProbe"]
    assert readiness["failureThreshold"] * 10 + 30 >= 15 * 60  # seconds before giving up
    assert liveness["initialDelay"] == "PT60S"
