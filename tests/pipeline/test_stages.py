"""Stages switch parts of the pipeline on and off; combinations that cannot work fail first."""

from __future__ import annotations

from typing import Any

import pytest

from phi3_infra.config import ConfigError
from phi3_infra.tooling.offline import OfflineRun
from tests.pipeline.conftest import Plan
from tests.pipeline.serving_plan import served_deployment

PIPELINE_PARTS = {
    "images": "phi3:images:ContainerImages",
    "data": "phi3:data:TrainingData",
    "job": "azure-native:machinelearningservices:Job",
    "model": "azure-native:machinelearningservices:ModelVersion",
    "endpoint": "azure-native:machinelearningservices:OnlineEndpoint",
    "deployment": "azure-native:machinelearningservices:OnlineDeployment",
}
SERVING_OUTPUTS = {"scoringUri", "openAiBaseUrl", "primaryKey", "secondaryKey", "endpointName"}


def _parts(run: OfflineRun) -> set[str]:
    return {part for part, token in PIPELINE_PARTS.items() if run.of_type(token)}


def test_all_stages_run_the_whole_pipeline(plan: Plan) -> None:
    run = plan()
    assert _parts(run) == set(PIPELINE_PARTS)
    assert run.outputs["stages"] == ["infra", "train", "serve"]
    assert set(run.outputs) >= SERVING_OUTPUTS
    assert {"trainerImage", "serverImage", "trainingJobName", "modelId"} <= set(run.outputs)
    job, project = run.outputs["trainingJobName"], run.named("project").id
    assert run.outputs["trainingJobUrl"] == f"https://ml.azure.com/runs/{job}?wsid={project}"


def test_infra_only_has_no_pipeline_resource(plan: Plan) -> None:
    run = plan(stages='["infra"]', trainingData=None)
    assert _parts(run) == set()
    # Training is serverless: no compute exists outside a job, so nothing idles at a cost.
    assert not run.of_type("azure-native:machinelearningservices:Compute")
    assert not SERVING_OUTPUTS & set(run.outputs)


def test_train_without_serve_builds_no_server_and_no_endpoint(plan: Plan) -> None:
    run = plan(stages='["infra", "train"]')
    assert _parts(run) == {"images", "data", "job", "model"}
    assert "serverImage" not in run.outputs
    assert [r.name for r in run.resources if r.name.endswith("-image")] == ["trainer-image"]


def test_serve_without_train_deploys_the_referenced_model(plan: Plan) -> None:
    run = plan(stages='["infra", "serve"]', trainingData=None, modelReference="azureml:phi3-ft:7")
    assert _parts(run) == {"images", "endpoint", "deployment"}
    model = served_deployment(run).inputs["properties"]["model"]
    assert model == f"{run.named('project').id}/models/phi3-ft/versions/7"
    assert "trainerImage" not in run.outputs


def test_submit_and_return_submits_the_job_without_waiting_or_registering(plan: Plan) -> None:
    run = plan(stages='["infra", "train"]', waitForTraining="false")
    assert run.of_type("azure-native:machinelearningservices:Job")
    assert not [r for r in run.resources if r.name == "training-job-completion"]
    assert not run.of_type(PIPELINE_PARTS["model"])
    assert "modelId" not in run.outputs
    assert run.outputs["trainingStatus"] == "Submitted"


def test_submit_and_return_with_serve_serves_nothing_until_a_model_exists(plan: Plan) -> None:
    """A first submission: no model yet, so the endpoint stands without a deployment
    (tests/pipeline/test_training_modes.py has the later runs)."""
    run = plan(waitForTraining="false")
    assert _parts(run) == {"images", "data", "job", "endpoint"}
    assert run.outputs["servedModelReference"] == ""


def test_a_model_reference_wins_over_the_trained_model(plan: Plan) -> None:
    run = plan(modelReference="azureml:phi3-ft-0123456789abcdef:1")
    assert _parts(run) == set(PIPELINE_PARTS)  # the new model is still trained and registered
    (deployment,) = run.of_type(PIPELINE_PARTS["deployment"])
    model = deployment.inputs["properties"]["model"]
    assert model == f"{run.named('project').id}/models/phi3-ft-0123456789abcdef/versions/1"
    assert run.outputs["servedModelReference"] == "azureml:phi3-ft-0123456789abcdef:1"
    assert run.outputs["trainedModelReference"] == f"azureml:{run.outputs['trainingJobName']}:1"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"trainingData": None}, "phi3-foundry:trainingData: required when stages include 'train'"),
        (
            {"stages": '["infra", "serve"]', "trainingData": None},
            "phi3-foundry:modelReference: required when stages include 'serve' without 'train'",
        ),
        (
            {"stages": '["infra", "train"]', "modelReference": "azureml:m:1"},
            "phi3-foundry:modelReference: only used when stages include 'serve'",
        ),
        (
            {"stages": '["infra"]'},
            "phi3-foundry:trainingData: only used when stages include 'train'",
        ),
        ({"imageBuild": "prebuilt"}, "phi3-foundry:trainerImage: required when imageBuild"),
        (
            {"trainerImage": "example.azurecr.io/t:1"},
            "phi3-foundry:trainerImage: only used when imageBuild is 'prebuilt'",
        ),
        (
            {"imageBuild": "prebuilt", "trainerImage": "trainer:latest", "serverImage": "x/y:1"},
            "phi3-foundry:trainerImage: invalid image reference 'trainer:latest'",
        ),
        (
            {"stages": '["infra", "serve"]', "trainingData": None, "modelReference": "my-model"},
            "phi3-foundry:modelReference: invalid model reference 'my-model'",
        ),
        ({"trainerArgs": '{"output_dir": "/tmp"}'}, "trainerArgs[output_dir]: set by the program"),
        ({"trainerArgs": '{"Num-Epochs": 3}'}, "trainerArgs[Num-Epochs]: not a flag"),
        ({"trainerArgs": '{"merge_output": false}'}, "merge_output false leaves no merged model"),
        ({"requestTimeoutSeconds": "180"}, "phi3-foundry:requestTimeoutSeconds: Input should be"),
        ({"endpointAuthMode": "password"}, "phi3-foundry:endpointAuthMode: Input should be"),
        ({"servingInstanceType": "E4s"}, "phi3-foundry:servingInstanceType: invalid instance"),
    ],
)
def test_unworkable_combinations_fail_before_any_resource(
    plan: Plan,
    registered: list[str],
    overrides: dict[str, Any],
    expected: str,
) -> None:
    with pytest.raises(ConfigError) as caught:
        plan(**overrides)
    assert expected in str(caught.value)
    assert registered == []


def test_every_combination_problem_is_listed_at_once(plan: Plan) -> None:
    with pytest.raises(ConfigError) as caught:
        plan(
            trainingData=None, servingInstanceType="Standard_NC24ads_A100_v4", imageBuild="prebuilt"
        )
    message = str(caught.value)
    for key in ("trainingData", "servingInstanceType", "trainerImage", "serverImage"):
        assert f"phi3-foundry:{key}:" in message
