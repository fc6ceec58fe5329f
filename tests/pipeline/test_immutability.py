"""Asset versions and jobs are immutable in Azure ML: a re-run must not update them, and neither
replacing nor destroying them may depend on Azure deleting an asset version (immutable.py).

Each test plans twice against the same fake Azure (tests/fakes/azure_rules.py), which replays
what the Pulumi engine would send the second time and refuses what Azure refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from phi3_infra.components import serving
from tests.fakes.azure_rules import (
    DATA_VERSION,
    ENVIRONMENT_VERSION,
    JOB,
    MODEL_VERSION,
    FakeAzure,
)
from tests.pipeline.conftest import Plan
from tests.pipeline.serving_plan import served_deployment

ALL_STAGES = '["infra", "train", "serve"]'
IMMUTABLE = (JOB, DATA_VERSION, ENVIRONMENT_VERSION, MODEL_VERSION)


def test_a_changed_expiry_tag_sends_nothing_to_jobs_or_asset_versions(plan: Plan) -> None:
    azure = FakeAzure()
    plan(azure=azure, stages=ALL_STAGES)
    plan(azure=azure, stages=ALL_STAGES, expiresOn="2027-06-30")
    assert azure.updates("azure-native:resources:ResourceGroup")  # the new tag does go out
    assert azure.updates(*IMMUTABLE) == []


def test_a_changed_scoring_route_is_a_new_server_environment(
    plan: Plan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """infra/README.md (Serving) tells users to change SCORING_PATH if the gateway maps /v1
    elsewhere; the registered environment keeps its routes, so the change needs a new one."""
    azure = FakeAzure()
    before = plan(azure=azure, stages=ALL_STAGES)
    monkeypatch.setattr(serving, "SCORING_PATH", "/v1/chat/completions")
    after = plan(azure=azure, stages=ALL_STAGES)
    environment = after.named("server-environment")
    assert environment.inputs["version"] != before.named("server-environment").inputs["version"]
    assert environment.inputs["properties"]["inferenceConfig"]["scoringRoute"] == {
        "path": "/v1/chat/completions",
        "port": serving.SERVER_PORT,
    }
    assert served_deployment(after).inputs["properties"]["environmentId"] == environment.id
    assert azure.updates(ENVIRONMENT_VERSION) == []


def test_new_data_leaves_the_old_versions_to_azure(plan: Plan, tmp_path: Path) -> None:
    """New data is a new data version, job and model; the old versions are not deleted (Azure ML
    archives rather than deletes them: they go with the project)."""
    azure = FakeAzure()
    before = plan(azure=azure, stages=ALL_STAGES)
    train = tmp_path / "train.jsonl"
    train.write_text(train.read_text() + train.read_text().splitlines(keepends=True)[0])
    after = plan(azure=azure, stages=ALL_STAGES)
    assert after.named("train-data").id != before.named("train-data").id
    assert after.named("model").id != before.named("model").id
    assert azure.deletes(DATA_VERSION, ENVIRONMENT_VERSION, MODEL_VERSION) == []


def test_new_data_sends_a_job_and_model_of_the_new_content(plan: Plan, tmp_path: Path) -> None:
    """The engine keeps ignored inputs by logical name, replacements included: what reaches
    Azure for the new job and model must be the new data, command and job, not the old ones."""
    azure = FakeAzure()
    plan(azure=azure, stages=ALL_STAGES)
    train = tmp_path / "train.jsonl"
    train.write_text(train.read_text() + train.read_text().splitlines(keepends=True)[0])
    after = plan(azure=azure, stages=ALL_STAGES)
    job, model = after.named("training-job"), after.named("model")
    for planned in (job, model, after.named("train-data"), after.named("trainer-environment")):
        assert azure.sent(planned.urn) == planned.inputs, planned.name
    assert job.inputs["properties"]["inputs"]["train"]["uri"] == after.named("train-data").id
    assert model.inputs["properties"]["modelUri"].startswith(f"azureml://jobs/{job.inputs['id']}/")


def test_a_renamed_data_file_with_the_same_bytes_changes_nothing(
    plan: Plan, tmp_path: Path
) -> None:
    azure = FakeAzure()
    before = plan(azure=azure, stages=ALL_STAGES)
    moved = tmp_path / "renamed.jsonl"
    moved.write_bytes((tmp_path / "train.jsonl").read_bytes())
    after = plan(azure=azure, stages=ALL_STAGES, trainingData=str(moved))
    for name in ("train-data", "train-data-upload", "training-job", "model"):
        assert after.named(name).inputs.get("url", after.named(name).id) == before.named(
            name
        ).inputs.get("url", before.named(name).id), name
    assert azure.updates(*IMMUTABLE) == []


def test_destroying_the_pipeline_deletes_no_asset_version(plan: Plan) -> None:
    """What `pulumi up` with `stages: [infra]` after a full run (or a destroy) takes away."""
    azure = FakeAzure()
    plan(azure=azure, stages=ALL_STAGES)
    plan(azure=azure, stages='["infra"]', trainingData=None)
    assert azure.deletes("azure-native:machinelearningservices:OnlineEndpoint")
    assert azure.deletes(DATA_VERSION, ENVIRONMENT_VERSION, MODEL_VERSION) == []
