"""Training that does not hold the pipeline (`waitForTraining: false`): `pulumi up` submits the job
and returns; later runs with the same inputs read the job at plan time, never resubmit it, and
register and deploy its model once Azure says Completed; a failed job stops `pulumi up` first.

The real program runs under Pulumi mocks; its job and endpoint lookups ask the fake ARM server
through the real credential chain. Job answers are the specs' Jobs_Get example (CommandJob/
get.json, tests/fakes/examples.py) in the scenario's status; the engine's side is replayed by the
fake Azure (tests/fakes/azure_rules.py) across the runs, as one stack's state."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pulumi
import pytest

from phi3_infra.components.training import TrainingFailed
from phi3_infra.program import build_stack
from phi3_infra.program import main as program_main
from phi3_infra.tooling import offline
from tests.fakes.arm_pipeline import PipelineArm
from tests.fakes.arm_server import FakeArm
from tests.fakes.azure_rules import JOB, MODEL_VERSION, FakeAzure
from tests.fakes.examples import command_job, example_response
from tests.pipeline.serving_plan import served_deployment

SUBMIT_AND_RETURN = {
    "azure-native:location": "eastus2",
    "phi3-foundry:owner": "team@contoso.com",
    "phi3-foundry:expiresOn": "2027-01-31",
    "phi3-foundry:stages": '["infra", "train", "serve"]',
    "phi3-foundry:trainingData": "scripts/data/capitals_chat.jsonl",
    "phi3-foundry:waitForTraining": "false",
    # Quota is tests/preflight's and test_stable_sizing's subject; the lookups run regardless.
    "phi3-foundry:skipPreflight": "true",
}
ENDPOINT_GET = "machinelearningservices__2022-10-01__OnlineEndpoint__get"
STUDIO = "https://ml.azure.com/runs/{job}?wsid={workspace}"


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


@pytest.fixture
def arm(signed_in_env: FakeArm, pipeline_arm: PipelineArm) -> PipelineArm:
    signed_in_env.add_region("eastus2")
    return pipeline_arm


def _up(azure: FakeAzure, **config: str) -> offline.OfflineRun:
    """One `pulumi up` of the stack: planned with the real lookups, then replayed on `azure`."""
    run = offline.run_offline(build_stack, SUBMIT_AND_RETURN | config, "eastus2")
    return azure.apply(run)


def _job(run: offline.OfflineRun) -> offline.PlannedResource:
    (job,) = run.of_type(JOB)
    return job


def _azure_reports(arm: PipelineArm, run: offline.OfflineRun, status: str, **more: Any) -> str:
    """Azure holds the job `run` submitted, in `status` (Jobs_Get); returns its name."""
    job = _job(run)
    resources = job.inputs["properties"]["resources"]
    workspace = str(job.id).rsplit("/jobs/", 1)[0]
    name = job.inputs["id"]
    studio = {"jobServiceType": "Studio", "endpoint": STUDIO.format(job=name, workspace=workspace)}
    answer = command_job(
        str(job.id),
        status=status,
        instance_type=resources["instanceType"],
        instance_count=resources["instanceCount"],
        services={"Studio": studio | more},
    )
    arm.script_job(name, answer)
    return str(name)


def _logged(caplog: pytest.LogCaptureFixture, level: int) -> str:
    return "\n".join(record.getMessage() for record in caplog.records if record.levelno == level)


def test_submit_and_return_then_a_later_run_registers_and_deploys(
    arm: PipelineArm, caplog: pytest.LogCaptureFixture
) -> None:
    azure = FakeAzure()
    caplog.set_level(logging.INFO)

    submitted = _up(azure)
    assert not submitted.of_type(MODEL_VERSION)
    assert not [r for r in submitted.resources if r.name == "training-job-completion"]
    assert submitted.outputs["trainingStatus"] == "Submitted"
    assert submitted.outputs["servedModelReference"] == ""
    assert "nothing is served yet; run `pulumi up` again" in _logged(caplog, logging.WARNING)

    job_name = _azure_reports(arm, submitted, "Running")
    caplog.clear()
    running = _up(azure)
    assert not running.of_type(MODEL_VERSION)
    assert running.outputs["trainingStatus"] == "Running"
    assert f"training job {job_name} is Running" in _logged(caplog, logging.WARNING)

    _azure_reports(arm, submitted, "Completed")
    completed = _up(azure)
    assert completed.outputs["trainingStatus"] == "Completed"
    (model,) = completed.of_type(MODEL_VERSION)
    assert (model.inputs["name"], model.inputs["version"]) == (job_name, "1")
    assert model.inputs["properties"]["modelUri"] == (
        f"azureml://jobs/{job_name}/outputs/model/paths/merged/"
    )
    deployment = served_deployment(completed)
    project = completed.named("project").id
    assert deployment.inputs["properties"]["model"] == f"{project}/models/{job_name}/versions/1"
    assert completed.waits_for(deployment.name, "model")
    assert completed.outputs["servedModelReference"] == f"azureml:{job_name}:1"
    assert completed.outputs["trainedModelReference"] == f"azureml:{job_name}:1"
    # One job, submitted once: the later runs read it and sent nothing for it.
    assert _job(completed).inputs == _job(submitted).inputs
    assert [r.method for r in azure.requests if r.type == JOB] == ["PUT"]


def test_while_a_retrain_runs_the_endpoint_keeps_its_model(
    arm: PipelineArm, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    first = offline.run_offline(build_stack, SUBMIT_AND_RETURN, "eastus2")
    project = str(first.named("project").id)
    endpoint = first.named("online-endpoint").inputs["endpointName"]
    # The endpoint serves an earlier job's model from its live deployment (2022-10-01
    # OnlineEndpoint/get.json and 2024-10-01 ManagedOnlineDeployment/get.json, as this stack's).
    answer = example_response(ENDPOINT_GET)
    answer["properties"]["traffic"] = {"phi3-0123456789ab": 100}
    arm.endpoints[endpoint] = answer
    earlier = f"{project}/models/phi3-ft-fedcba9876543210/versions/1"
    arm.fake.deploy_online(
        "eastus2",
        f"{project}/onlineEndpoints/{endpoint}/deployments/phi3-0123456789ab",
        "Standard_E4s_v3",
        1,
        model=earlier,
    )
    _azure_reports(arm, first, "Running")

    run = offline.run_offline(build_stack, SUBMIT_AND_RETURN, "eastus2")
    assert not run.of_type(MODEL_VERSION)
    assert served_deployment(run).inputs["properties"]["model"] == earlier
    assert run.outputs["servedModelReference"] == "azureml:phi3-ft-fedcba9876543210:1"
    assert "the endpoint keeps serving azureml:phi3-ft-fedcba9876543210:1" in _logged(
        caplog, logging.INFO
    )


@pytest.mark.parametrize("status", ["Failed", "Canceled"])
@pytest.mark.parametrize("wait", ["false", "true"])
def test_a_job_that_ended_badly_stops_pulumi_up_before_any_resource(
    arm: PipelineArm, registered: list[str], status: str, wait: str
) -> None:
    first = offline.run_offline(build_stack, SUBMIT_AND_RETURN, "eastus2")
    registered.clear()
    # JobService.errorMessage (mfe.json): the error Azure reports for the job's service.
    job_name = _azure_reports(arm, first, status, errorMessage="CUDA out of memory")
    with pytest.raises(pulumi.RunError) as caught:
        offline.run_offline(
            _main_program,
            SUBMIT_AND_RETURN | {"phi3-foundry:waitForTraining": wait},
            "eastus2",
        )
    assert registered == []
    message = str(caught.value)
    assert f"training job {job_name} {status}: CUDA out of memory" in message
    assert f"logs: https://ml.azure.com/runs/{job_name}?wsid=" in message
    assert "`pulumi config set phi3-foundry:trainingRun 1`" in message


def test_a_new_training_run_submits_a_new_job_on_the_same_inputs(arm: PipelineArm) -> None:
    first = offline.run_offline(build_stack, SUBMIT_AND_RETURN, "eastus2")
    failed = _azure_reports(arm, first, "Failed", errorMessage="node preempted")
    with pytest.raises(TrainingFailed):
        offline.run_offline(build_stack, SUBMIT_AND_RETURN, "eastus2")
    again = offline.run_offline(
        build_stack, SUBMIT_AND_RETURN | {"phi3-foundry:trainingRun": "1"}, "eastus2"
    )
    job = _job(again)
    assert job.inputs["id"] != failed
    # The same run in every respect but its name.
    for key in ("command", "resources", "inputs", "environmentId"):
        assert job.inputs["properties"][key] == _job(first).inputs["properties"][key], key
    assert again.outputs["trainingStatus"] == "Submitted"
