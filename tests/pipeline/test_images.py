"""Images: content tags that honour .dockerignore, the three ways to provide them, and the
registry build and token exchange against the fake ARM server."""

from __future__ import annotations

import io
import tarfile
import traceback
from pathlib import Path

import pytest
from pulumi.runtime import rpc

from phi3_infra.azure import registry_build
from phi3_infra.azure.arm import ArmClient, OperationFailed, OperationTimedOut, Poll
from phi3_infra.azure.registry_build import run_registry_build
from phi3_infra.build_context import context_files, context_hash
from phi3_infra.paths import SERVER_CONTEXT, TRAINER_CONTEXT
from tests.fakes.arm_pipeline import PipelineArm
from tests.fakes.arm_server import FixedToken
from tests.fakes.clock import fake_poll
from tests.pipeline.conftest import Plan, write_context

REGISTRY = (
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg"
    "/providers/Microsoft.ContainerRegistry/registries/phi3acr1"
)
FAST = Poll(timeout_s=5, interval_s=0.01)
# Gives up after the first look: anything not yet finished times out.
NO_PATIENCE = Poll(timeout_s=0, interval_s=1)


def test_context_files_follow_dockerignore(tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", "pkg")
    (context / "pkg" / "__pycache__").mkdir()
    (context / "pkg" / "__pycache__" / "m.pyc").write_bytes(b"\0")
    (context / "pkg" / "sub").mkdir()
    (context / "pkg" / "sub" / "m.py").write_text("x = 1\n")
    assert context_files(context) == [
        ".dockerignore",
        "Dockerfile",
        "pkg/__init__.py",
        "pkg/sub/m.py",
    ]


def test_the_tag_changes_with_sent_content_only(tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx", "pkg")
    before = context_hash(context)
    (context / "notes.txt").write_text("ignored anyway")
    assert context_hash(context) == before
    (context / "pkg" / "__init__.py").write_text('"""changed"""\n')
    assert context_hash(context) != before


@pytest.mark.parametrize("context", [TRAINER_CONTEXT, SERVER_CONTEXT])
def test_the_real_image_folders_send_no_bytecode(context: Path) -> None:
    files = context_files(context)
    assert "Dockerfile" in files and "requirements.txt" in files
    assert not [name for name in files if "__pycache__" in name or name.endswith(".pyc")]


def test_prebuilt_images_are_used_as_given(plan: Plan) -> None:
    trainer = "contoso.azurecr.io/phi3-trainer@sha256:" + "a" * 64
    server = "contoso.azurecr.io/phi3-server:1.2.0"
    run = plan(imageBuild="prebuilt", trainerImage=trainer, serverImage=server)
    assert (run.outputs["trainerImage"], run.outputs["serverImage"]) == (trainer, server)
    assert run.named("trainer-environment").inputs["properties"]["image"] == trainer
    assert not [r for r in run.resources if r.name.endswith("-image")]


def test_remote_builds_push_content_tags_to_the_stacks_registry(full_run) -> None:  # type: ignore[no-untyped-def]
    registry = full_run.named("container-registry")
    build = full_run.named("trainer-image").inputs
    assert build["registry_id"] == registry.id
    repository, tag = build["image"].split(":")
    assert repository == "phi3-trainer" and len(tag) == 16
    assert full_run.outputs["trainerImage"] == f"{registry.azure_name}.azurecr.io/{build['image']}"


def test_local_builds_push_with_a_secret_registry_token_and_acr_push(plan: Plan) -> None:
    run = plan(imageBuild="local")
    image = run.named("trainer-image")
    assert image.type == "docker-build:index:Image"
    assert image.inputs["push"] is True
    assert image.inputs["platforms"] == ["linux/amd64"]
    # The registry credentials reach the engine as a secret: encrypted in state.
    registries = image.inputs["registries"]
    assert registries[rpc._special_sig_key] == rpc._special_secret_sig
    (registry,) = registries["value"]
    assert registry["username"] == "00000000-0000-0000-0000-000000000000"
    assert run.named("container-registry").inputs["adminUserEnabled"] is False
    # What Azure ML pulls is pinned to the pushed digest.
    assert run.outputs["trainerImage"] == f"{image.inputs['tags'][0]}@{image.outputs['digest']}"
    push = run.named("deployer-acr-push")
    assert push.inputs["scope"] == run.named("container-registry").id
    assert run.waits_for("trainer-image", "deployer-acr-push")


def test_registry_build_uploads_the_context_and_waits_for_the_run(
    pipeline_arm: PipelineArm, arm_client: ArmClient, tmp_path: Path
) -> None:
    context = write_context(tmp_path / "ctx", "pkg")
    pipeline_arm.script_run("cb7", "Queued", "Running", "Succeeded")
    run = run_registry_build(arm_client, REGISTRY, context, "phi3-trainer:abc", FAST)
    assert run["properties"]["status"] == "Succeeded"
    (request,) = pipeline_arm.scheduled
    assert request["imageNames"] == ["phi3-trainer:abc"]
    assert request["isPushEnabled"] is True
    assert request["dockerFilePath"] == "Dockerfile"
    uploaded = pipeline_arm.uploads[request["sourceLocation"]]
    with tarfile.open(fileobj=io.BytesIO(uploaded)) as archive:
        assert sorted(archive.getnames()) == context_files(context)


def test_a_registry_run_scheduled_asynchronously_is_followed_to_the_run(
    pipeline_arm: PipelineArm, arm_client: ArmClient, tmp_path: Path
) -> None:
    """scheduleRun may answer 202 without a body (RegistriesScheduleRun.json): the run id comes
    from the operation's result, not from a body that is not there."""
    pipeline_arm.schedule_run_status = "202"
    pipeline_arm.script_run("cb10", "Queued", "Succeeded")
    poll, _ = fake_poll(interval_s=10)
    run = run_registry_build(arm_client, REGISTRY, write_context(tmp_path / "c", "p"), "x:1", poll)
    assert run["properties"] == {"runId": "cb10", "status": "Succeeded", "runErrorMessage": ""}
    operation = [c.status for c in pipeline_arm.fake.calls if "/operationResults/" in c.path]
    assert operation == [202, 200]
    assert len(pipeline_arm.fake.calls_to("/runs/cb10")) == 2


def test_a_failed_registry_build_says_why_and_where_the_log_is(
    pipeline_arm: PipelineArm, arm_client: ArmClient, tmp_path: Path
) -> None:
    pipeline_arm.script_run("cb8", "Running", "Failed", error="step 3: pip install failed")
    with pytest.raises(OperationFailed) as caught:
        run_registry_build(arm_client, REGISTRY, write_context(tmp_path / "c", "p"), "x:1", FAST)
    message = str(caught.value)
    assert "cb8 of x:1 Failed: step 3: pip install failed" in message
    assert "logs: az acr task logs --registry phi3acr1 --run-id cb8" in message
    # The run's log link is a SAS URL: it must not reach `pulumi up` output or CI logs.
    assert "sig=" not in message


def test_a_registry_build_that_outlasts_the_wait_says_how_to_follow_it(
    pipeline_arm: PipelineArm, arm_client: ArmClient, tmp_path: Path
) -> None:
    pipeline_arm.script_run("cb9", "Running")
    with pytest.raises(OperationTimedOut) as caught:
        run_registry_build(
            arm_client, REGISTRY, write_context(tmp_path / "c", "p"), "x:1", NO_PATIENCE
        )
    message = str(caught.value)
    assert "registry build cb9 of x:1 still Running" in message
    assert "`az acr task logs --registry phi3acr1 --run-id cb9`" in message
    assert "imageBuild" in message
    # The training settings do nothing for a registry build.
    assert "trainingTimeoutMinutes" not in message
    assert "waitForTraining" not in message


def _full_error_text(error: BaseException) -> str:
    """What a provider's traceback shows: the message and every chained exception."""
    return "".join(traceback.format_exception(error))


def test_a_refused_context_upload_keeps_the_sas_out_of_the_error(
    pipeline_arm: PipelineArm, arm_client: ArmClient, tmp_path: Path
) -> None:
    pipeline_arm.fake.fail(403, path_contains="/upload/")
    with pytest.raises(registry_build.BuildSourceUploadError) as caught:
        run_registry_build(arm_client, REGISTRY, write_context(tmp_path / "c", "p"), "x:1", FAST)
    assert "/upload/source-1.tar.gz answered 403" in str(caught.value)
    assert "sig=" not in _full_error_text(caught.value)
    assert pipeline_arm.scheduled == []


def test_an_unreachable_upload_url_keeps_the_sas_out_of_the_error() -> None:
    # Port 1 refuses connections: requests' ConnectionError names the URL with its query.
    sas_url = "https://127.0.0.1:1/upload/source.tar.gz?sv=2024&sig=SECRET-SIGNATURE"
    with pytest.raises(registry_build.BuildSourceUploadError) as caught:
        registry_build.upload_build_source(sas_url, b"archive")
    assert "https://127.0.0.1:1/upload/source.tar.gz failed: ConnectionError" in str(caught.value)
    assert "SECRET-SIGNATURE" not in _full_error_text(caught.value)


def test_entra_token_is_exchanged_for_a_registry_refresh_token(
    pipeline_arm: PipelineArm,
) -> None:
    login_server = pipeline_arm.fake.url.removeprefix("https://")
    token = registry_build.exchange_acr_refresh_token(login_server, "tenant", FixedToken())
    assert token == f"acr-refresh-token-for-{login_server}"
    with pytest.raises(RuntimeError, match=r"refused the token exchange \(401\).*AcrPush"):
        registry_build.exchange_acr_refresh_token(login_server, "tenant", FixedToken("expired"))
