"""Training data: validated with the trainer's validator before anything exists, then uploaded
with a bearer token (shared keys are off) and registered as a data asset."""

from __future__ import annotations

from pathlib import Path

import pytest

from phi3_infra.azure.blob import upload_blob
from phi3_infra.tooling.offline import OfflineRun
from phi3_infra.training_data import DataError
from tests.fakes.arm_pipeline import PipelineArm
from tests.imports import run_and_list_modules
from tests.pipeline.conftest import Plan


def test_invalid_lines_fail_with_file_and_line_before_any_resource(
    plan: Plan,
    tmp_path: Path,
    registered: list[str],
) -> None:
    data = tmp_path / "train.jsonl"
    lines = data.read_text().splitlines()
    lines[2] = '{"messages": [{"role": "user", "content": "hi"}]}'
    lines[4] = "not json"
    data.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as caught:
        plan()
    message = str(caught.value)
    assert "2 problem(s) in the training data; nothing was uploaded" in message
    assert f"{data}:3: the last message must be the assistant's" in message
    assert f"{data}:5: not valid JSON" in message
    assert registered == []


def test_a_missing_file_is_named(plan: Plan, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nowhere\.jsonl:0: file not found"):
        plan(trainingData=str(tmp_path / "nowhere.jsonl"))


def test_relative_paths_are_read_from_the_project_folder(plan: Plan) -> None:
    run = plan(trainingData="scripts/data/capitals_chat.jsonl")
    upload = run.named("train-data-upload").inputs
    assert upload["path"].endswith("scripts/data/capitals_chat.jsonl")
    description = run.named("train-data").inputs["properties"]["description"]
    assert description == f"240 chat records, sha256 {upload['sha256']}"


def test_data_goes_to_a_private_container_and_an_asset(full_run: OfflineRun) -> None:
    container = full_run.named("data-container").inputs
    assert container["publicAccess"] == "None"
    upload = full_run.named("train-data-upload").inputs
    account = full_run.named("storage").azure_name
    assert upload["url"].startswith(f"https://{account}.blob.core.windows.net/training-data/train/")
    asset = full_run.named("train-data").inputs
    assert asset["name"] == "phi3-train"
    assert asset["properties"]["dataType"] == "uri_file"
    assert asset["properties"]["dataUri"] == upload["url"]
    # Named by its content alone: the blob and the version, whatever the file is called.
    assert upload["url"].endswith(f"/train/{upload['sha256']}.jsonl")
    assert asset["version"] == upload["sha256"][:16]
    # New data replaces the upload, but the old data version still points at the old blob.
    assert full_run.named("train-data-upload").options.retain_on_delete
    writer = full_run.named("deployer-storage-blob-data-contributor").inputs
    assert writer["scope"] == full_run.named("storage").id
    assert writer["principalType"] == "User"


def test_a_ci_service_principal_can_deploy(plan: Plan) -> None:
    run = plan(deployerPrincipalType="ServicePrincipal")
    writer = run.named("deployer-storage-blob-data-contributor").inputs
    assert writer["principalType"] == "ServicePrincipal"


def test_upload_waits_out_a_new_role_assignment(pipeline_arm: PipelineArm) -> None:
    """Data-plane RBAC takes minutes: 403 is retried until the role arrives."""
    pipeline_arm.fake.fail(403, times=2, path_contains="/blob/")
    url = f"{pipeline_arm.fake.url}/blob/training-data/train/abc/train.jsonl"
    tokens: list[str] = []

    def token() -> str:
        tokens.append("t")
        return "t"

    upload_blob(url, b'{"messages": []}\n', token, interval_s=0.01)
    assert pipeline_arm.uploads["training-data/train/abc/train.jsonl"] == b'{"messages": []}\n'
    assert len(tokens) == 3  # a fresh token per attempt


def test_upload_gives_up_with_the_url_and_the_answer(pipeline_arm: PipelineArm) -> None:
    pipeline_arm.fake.fail(403, path_contains="/blob/")
    url = f"{pipeline_arm.fake.url}/blob/training-data/x.jsonl"
    with pytest.raises(
        RuntimeError, match=r"upload to .*/blob/training-data/x.jsonl failed \(403\)"
    ):
        upload_blob(url, b"{}", lambda: "t", patience_s=0.05, interval_s=0.01)


def test_a_failed_upload_never_shows_the_urls_query(pipeline_arm: PipelineArm) -> None:
    """A signed blob URL carries its SAS in the query: the error names the blob, not the SAS."""
    pipeline_arm.fake.fail(403, path_contains="/blob/")
    url = f"{pipeline_arm.fake.url}/blob/training-data/x.jsonl?sv=2024&sig=SECRET-SIGNATURE"
    with pytest.raises(RuntimeError) as caught:
        upload_blob(url, b"{}", lambda: "t", patience_s=0.05, interval_s=0.01)
    assert "/blob/training-data/x.jsonl failed (403)" in str(caught.value)
    assert "SECRET-SIGNATURE" not in str(caught.value)


def test_validation_runs_in_the_programs_own_environment(repo_root: Path) -> None:
    """`pulumi up` has no torch: the trainer's validator (the shared rules package) must load
    without it."""
    probe = (
        "from phi3_infra.config import parse_stack_config; "
        "from phi3_infra.training_data import validate_data; "
        "config = parse_stack_config({'location': 'eastus2', 'owner': 'o', "
        "'expiresOn': '2027-01-01', 'stages': ['infra', 'train'], "
        "'trainingData': 'scripts/data/capitals_chat.jsonl'}); "
        "print(validate_data({'train': config.training_data})[0].records)"
    )
    printed, loaded = run_and_list_modules(probe, repo_root)
    assert printed == ["240"]
    assert "phi3_training_rules" in loaded and "phi3_trainer" not in loaded
    assert not loaded & {"torch", "transformers", "trl", "datasets"}
