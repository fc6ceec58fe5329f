"""The planned model registration and online deployment, rehearsed: the full pipeline's plan
(Pulumi.eastus2.yaml), a job output holding the tiny model where the trainer writes it
(`merged/`, training_image/phi3_trainer/train.py), and the server image's own environment.

The contracts between the plan and the server each fail here on a deliberate mismatch, naming
the contract; the served endpoint answers the reference workflow's two /score bodies and the
official `openai` client with the endpoint's key, refuses without it and answers 429 past the
endpoint's admission limit (sources in phi3_rehearsal/gateway.py)."""

from __future__ import annotations

import shutil
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from phi3_infra.cli.plan import plan_stack
from phi3_infra.components import serving, training
from phi3_infra.stack_files import stack_file_config
from phi3_infra.tooling.offline import OfflineRun
from phi3_rehearsal.deployment import (
    DeploymentFailed,
    RunningDeployment,
    deploy_planned,
    iso_duration_s,
)
from phi3_rehearsal.images import ImageEnv, image_env
from tests.pipeline.serving_plan import served_deployment

STACK = "eastus2"
# Torch on one thread: the test machine's cores are shared (tests/serving/server_process.py).
HOST_ENV = {"OMP_NUM_THREADS": "1"}
# The reference workflow's two scoring bodies (serving_image/README.md, "Routes").
PROMPT_FLOW_BODY = {
    "input_data": ["What is the capital of Norway?"],
    "params": {"max_new_tokens": 8},
}
PORTAL_BODY = {
    "input_data": {
        "input_string": [{"role": "user", "content": "Capital of Japan?"}],
        "parameters": {"max_new_tokens": 8},
    }
}
QUESTION: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the capital of Peru?"}
]


def plan(repo_root: Path) -> OfflineRun:
    return plan_stack(stack_file_config(repo_root / f"Pulumi.{STACK}.yaml"), STACK)


@pytest.fixture(scope="module")
def planned(repo_root: Path) -> OfflineRun:
    return plan(repo_root)


@pytest.fixture(scope="module")
def job_outputs(tiny_phi3: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The planned job's output `model` as the trainer leaves it: the servable model in merged/."""
    output = tmp_path_factory.mktemp("job-outputs") / "model"
    shutil.copytree(tiny_phi3, output / "merged")
    return {"model": output}


@pytest.fixture(scope="module")
def server() -> ImageEnv:
    return image_env("server")


@pytest.fixture(scope="module")
def deployment(
    planned: OfflineRun,
    job_outputs: dict[str, Path],
    server: ImageEnv,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningDeployment]:
    workdir = tmp_path_factory.mktemp("deployment")
    with deploy_planned(planned, job_outputs, server, workdir, host_env=HOST_ENV) as running:
        yield running
    assert running.process.returncode is not None


def key_header(deployment: RunningDeployment) -> dict[str, str]:
    assert deployment.api_key
    return {"Authorization": f"Bearer {deployment.api_key}"}


def process_environment(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode().partition("=")[::2] for entry in entries if entry)


def replanned_deploy(
    repo_root: Path,
    job_outputs: dict[str, Path],
    server: ImageEnv,
    workdir: Path,
) -> None:
    with deploy_planned(plan(repo_root), job_outputs, server, workdir, host_env=HOST_ENV):
        pytest.fail("the deployment started despite the mismatch")


# --- the contracts, each broken on purpose ------------------------------------------------


def test_model_uri_must_name_the_folder_the_job_wrote(
    repo_root: Path,
    job_outputs: dict[str, Path],
    server: ImageEnv,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(training, "MERGED_MODEL", "merged-model")
    with pytest.raises(DeploymentFailed, match="contract: model URI") as failure:
        replanned_deploy(repo_root, job_outputs, server, tmp_path)
    assert "paths/merged-model/" in str(failure.value)
    assert "['merged']" in str(failure.value)  # what the job did write


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"PHI3_SERVER_WORKERS": "2"}, "PHI3_SERVER_WORKERS is not a setting of the server"),
        ({"PHI3_SERVER_REQUEST_TIMEOUT": "500"}, "the server rejects PHI3_SERVER_REQUEST_TIMEOUT"),
    ],
)
def test_server_must_read_and_accept_every_planned_variable(
    repo_root: Path,
    job_outputs: dict[str, Path],
    server: ImageEnv,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    variables: dict[str, str],
    message: str,
) -> None:
    planned_variables = serving.server_environment_variables
    monkeypatch.setattr(
        serving,
        "server_environment_variables",
        lambda settings: planned_variables(settings) | variables,
    )
    with pytest.raises(DeploymentFailed, match=message) as failure:
        replanned_deploy(repo_root, job_outputs, server, tmp_path)
    assert str(failure.value).startswith("contract: the deployment's environmentVariables")


def test_routes_must_use_the_port_the_server_listens_on(
    repo_root: Path,
    job_outputs: dict[str, Path],
    server: ImageEnv,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(serving, "SERVER_PORT", 5002)
    with pytest.raises(DeploymentFailed, match="contract: environment phi3-server") as failure:
        replanned_deploy(repo_root, job_outputs, server, tmp_path)
    assert "scoringRoute.port 5002 (/score)" in str(failure.value)
    assert "the server listens on 5001" in str(failure.value)


@pytest.mark.slow
def test_a_server_that_exits_fails_the_deployment_with_its_log(
    repo_root: Path,
    job_outputs: dict[str, Path],
    server: ImageEnv,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    planned_variables = serving.server_environment_variables
    missing = tmp_path / "no-model-here"
    monkeypatch.setattr(
        serving,
        "server_environment_variables",
        lambda settings: planned_variables(settings) | {"PHI3_SERVER_MODEL_DIR": str(missing)},
    )
    with pytest.raises(
        DeploymentFailed, match="exited with code 2 before its livenessProbe"
    ) as failure:
        replanned_deploy(repo_root, job_outputs, server, tmp_path)
    assert str(missing) in str(failure.value)  # the server's own message, from its log


@pytest.mark.parametrize(
    ("text", "seconds"), [("PT90S", 90), ("PT0.5S", 0.5), ("PT1M30S", 90), ("P1DT2H", 93600)]
)
def test_iso_8601_durations(text: str, seconds: float) -> None:
    assert iso_duration_s(text, "properties.x") == seconds


@pytest.mark.parametrize("text", ["90s", "PT", "P", "PT-5S"])
def test_other_durations_are_refused_naming_the_key(text: str) -> None:
    with pytest.raises(DeploymentFailed, match=r"properties\.x: .* is not an ISO 8601 duration"):
        iso_duration_s(text, "properties.x")


@pytest.mark.slow
def test_probe_routes_must_be_the_servers(
    repo_root: Path,
    job_outputs: dict[str, Path],
    server: ImageEnv,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(serving, "READINESS_PATH", "/readyz")
    with pytest.raises(
        DeploymentFailed, match="readinessProbe GET /readyz on port 5001"
    ) as failure:
        replanned_deploy(repo_root, job_outputs, server, tmp_path)
    assert "answered 404" in str(failure.value)


# --- the running deployment ---------------------------------------------------------------


@pytest.mark.slow
def test_server_runs_with_the_planned_variables_and_the_mounted_model(
    deployment: RunningDeployment, planned: OfflineRun
) -> None:
    properties = served_deployment(planned).inputs["properties"]
    environment = process_environment(deployment.process.pid)
    for name, value in properties["environmentVariables"].items():
        assert environment[name] == value
    # Managed online deployments mount a model at /var/azureml-app/azureml-models/<name>/<version>
    # and set AZUREML_MODEL_DIR to it (how-to-deploy-custom-container.md).
    model = planned.named("model").inputs
    model_dir = Path(environment["AZUREML_MODEL_DIR"])
    assert model_dir.parts[-3:] == ("azureml-models", model["name"], model["version"])
    config = model_dir / "merged" / "config.json"
    assert config.is_file()
    assert not config.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert f"ready: serving {model_dir / 'merged'}" in deployment.log.read_text()


@pytest.mark.slow
def test_reference_score_bodies_at_the_scoring_uri(deployment: RunningDeployment) -> None:
    assert deployment.scoring_uri == f"{deployment.gateway_url}/score"
    texts = httpx.post(
        deployment.scoring_uri, json=PROMPT_FLOW_BODY, headers=key_header(deployment), timeout=60
    )
    assert texts.status_code == 200, texts.text
    answers = texts.json()
    assert isinstance(answers, list) and len(answers) == 1 and isinstance(answers[0], str)
    chat = httpx.post(
        deployment.scoring_uri, json=PORTAL_BODY, headers=key_header(deployment), timeout=60
    )
    assert chat.status_code == 200, chat.text
    assert set(chat.json()) == {"output"} and isinstance(chat.json()["output"], str)


@pytest.mark.slow
def test_openai_client_chats_with_the_endpoint_key(
    deployment: RunningDeployment, planned: OfflineRun
) -> None:
    # The URL the program exports as openAiBaseUrl, derived the same way from the scoring URI.
    assert deployment.openai_base_url == f"{deployment.gateway_url}/v1"
    client = openai.OpenAI(
        base_url=deployment.openai_base_url, api_key=deployment.api_key, max_retries=0
    )
    (model,) = client.models.list().data
    completion = client.chat.completions.create(
        model=model.id, messages=QUESTION, max_tokens=6, temperature=0.0
    )
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert isinstance(completion.choices[0].message.content, str)
    assert deployment.api_key == planned.outputs["primaryKey"]


@pytest.mark.slow
def test_endpoint_refuses_without_its_key(deployment: RunningDeployment) -> None:
    assert httpx.post(deployment.scoring_uri, json=PROMPT_FLOW_BODY, timeout=60).status_code == 401
    stranger = openai.OpenAI(
        base_url=deployment.openai_base_url, api_key="not-the-key", max_retries=0
    )
    with pytest.raises(openai.AuthenticationError):
        stranger.chat.completions.create(model="phi3", messages=QUESTION, max_tokens=2)


@pytest.mark.slow
def test_container_errors_reach_the_client_as_424(deployment: RunningDeployment) -> None:
    response = httpx.get(
        f"{deployment.openai_base_url}/no-such-route", headers=key_header(deployment), timeout=60
    )
    assert response.status_code == 424
    assert response.headers["ms-azureml-model-error-statuscode"] == "404"


@pytest.mark.slow
def test_429_when_more_requests_than_the_endpoint_admits(
    deployment: RunningDeployment, planned: OfflineRun
) -> None:
    requests = served_deployment(planned).inputs["properties"]["requestSettings"]
    # At most 2 * max_concurrent_requests_per_instance * instance_count in parallel
    # (how-to-troubleshoot-online-endpoints.md, 429); the rehearsal runs one instance.
    admitted = 2 * int(requests["maxConcurrentRequestsPerInstance"])
    body = {"model": "phi3", "messages": QUESTION, "max_tokens": 600, "ignore_eos": True}

    def ask() -> int:
        url = f"{deployment.openai_base_url}/chat/completions"
        return httpx.post(url, json=body, headers=key_header(deployment), timeout=60).status_code

    with ThreadPoolExecutor(max_workers=admitted + 4) as pool:
        codes = list(pool.map(lambda _: ask(), range(admitted + 4)))
    # Refused at the endpoint, never by the container (that would be 424).
    assert sorted(set(codes)) == [200, 429], codes
