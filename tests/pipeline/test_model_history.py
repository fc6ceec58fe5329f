"""History and rollback: a retrain keeps the previous job and model version in Azure (the
experiment's record, and what a rollback serves), and any registered version is served by one
config line, `modelReference`, with 'train' still in the stages.

Each test plans several runs against one fake Azure (tests/fakes/azure_rules.py), which replays
what the Pulumi engine would send, deletes included (none for what is `retain_on_delete`)."""

from __future__ import annotations

from pathlib import Path

from phi3_infra.tooling.offline import OfflineRun
from tests.fakes.azure_rules import JOB, MODEL_VERSION, FakeAzure
from tests.pipeline.conftest import Plan
from tests.pipeline.serving_plan import served_deployment


def _retrain_on_new_data(tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    train.write_text(train.read_text() + train.read_text().splitlines(keepends=True)[0])


def _model_id(run: OfflineRun) -> str:
    return str(served_deployment(run).inputs["properties"]["model"])


def test_a_retrain_keeps_the_previous_job_and_model_version(plan: Plan, tmp_path: Path) -> None:
    azure = FakeAzure()
    before = plan(azure=azure)
    _retrain_on_new_data(tmp_path)
    after = plan(azure=azure)
    assert after.named("training-job").id != before.named("training-job").id
    assert after.named("model").id != before.named("model").id
    # The engine replaced both logical resources and sent Azure no delete for the old ones.
    assert azure.deletes(JOB, MODEL_VERSION) == []
    assert _model_id(after) == after.named("model").id


def test_rollback_is_one_config_line(plan: Plan, tmp_path: Path) -> None:
    azure = FakeAzure()
    first = plan(azure=azure)
    previous = first.outputs["trainedModelReference"]  # what the user notes before a retrain
    _retrain_on_new_data(tmp_path)
    retrained = plan(azure=azure)
    assert retrained.outputs["servedModelReference"] != previous

    rolled_back = plan(azure=azure, modelReference=previous)
    assert _model_id(rolled_back) == first.named("model").id
    assert rolled_back.outputs["servedModelReference"] == previous
    # Training stays as it was: the retrained job and model are kept, nothing is resubmitted.
    assert rolled_back.named("training-job").inputs == retrained.named("training-job").inputs
    assert rolled_back.outputs["trainedModelReference"] == retrained.outputs["servedModelReference"]
    assert azure.deletes(JOB, MODEL_VERSION) == []
    assert [r for r in azure.requests if r.type == JOB and r.update] == []

    # Forward again: the same line removed.
    forward = plan(azure=azure, modelReference=None)
    assert _model_id(forward) == retrained.named("model").id


def test_dropping_training_from_the_stages_keeps_jobs_and_models(plan: Plan) -> None:
    """What `stages: [infra, serve]` after a run with 'train' leaves: the record stays, and the
    trained model stays servable by reference."""
    azure = FakeAzure()
    trained = plan(azure=azure)
    reference = trained.outputs["trainedModelReference"]
    serving_only = plan(
        azure=azure, stages='["infra", "serve"]', trainingData=None, modelReference=reference
    )
    assert _model_id(serving_only) == trained.named("model").id
    assert azure.deletes(JOB, MODEL_VERSION) == []
