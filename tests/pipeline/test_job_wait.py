"""`pulumi up` waits for the training job: success, failure with Azure's reason and the log link,
timeout, and ARM hiccups on the way (throttling, a token that expires mid-wait, a sign-in that
stops working) — against the fake ARM server over HTTPS."""

from __future__ import annotations

from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from phi3_infra.azure.arm import (
    ArmAuthError,
    ArmClient,
    ArmNotFoundError,
    OperationFailed,
    OperationTimedOut,
    Poll,
)
from phi3_infra.azure.waiting import AUTH_FAILURES_TOLERATED, wait_for_job
from tests.fakes.arm_pipeline import PipelineArm, job_state
from tests.fakes.arm_server import SUBSCRIPTION_ID, ExpiringTokens, FixedToken
from tests.fakes.clock import FakeClock, fake_poll

JOB = "phi3-ft-0123456789abcdef"
PATH = (
    f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/rg/providers/"
    f"Microsoft.MachineLearningServices/workspaces/proj/jobs/{JOB}"
)
WORKSPACE_ID = f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/rg/workspaces/proj"


def _poll(timeout_s: float = 3600) -> tuple[Poll, FakeClock]:
    return fake_poll(timeout_s=timeout_s, interval_s=60)


def test_waits_through_queued_and_running_to_completed(
    pipeline_arm: PipelineArm, arm_client: ArmClient
) -> None:
    pipeline_arm.script_job(
        JOB, *(job_state(JOB, status) for status in ("Queued", "Preparing", "Running", "Completed"))
    )
    poll, clock = _poll()
    job = wait_for_job(arm_client, PATH, WORKSPACE_ID, poll)
    assert job["properties"]["status"] == "Completed"
    assert clock.sleeps == [60, 60, 60]
    assert len(pipeline_arm.fake.calls_to(f"/jobs/{JOB}")) == 4


def test_failure_surfaces_the_jobs_error_and_its_log_link(
    pipeline_arm: PipelineArm, arm_client: ArmClient
) -> None:
    error = {"code": "UserError", "message": "CUDA out of memory. Tried to allocate 2.00 GiB"}
    pipeline_arm.script_job(JOB, job_state(JOB, "Running"), job_state(JOB, "Failed", error=error))
    with pytest.raises(OperationFailed) as caught:
        wait_for_job(arm_client, PATH, WORKSPACE_ID, _poll()[0])
    message = str(caught.value)
    assert f"training job {JOB} Failed: CUDA out of memory" in message
    assert f"logs: https://ml.azure.com/runs/{JOB}?wsid=" in message
    assert "user_logs/std_log.txt" in message


def test_failure_without_a_studio_service_links_the_documented_url(
    pipeline_arm: PipelineArm, arm_client: ArmClient
) -> None:
    state = job_state(JOB, "Canceled", services={})
    pipeline_arm.script_job(JOB, state)
    with pytest.raises(OperationFailed) as caught:
        wait_for_job(arm_client, PATH, WORKSPACE_ID, _poll()[0])
    assert "Canceled: Azure gave no error message" in str(caught.value)
    assert f"https://ml.azure.com/runs/{JOB}?wsid={WORKSPACE_ID}" in str(caught.value)


def test_timeout_says_the_job_keeps_running(
    pipeline_arm: PipelineArm, arm_client: ArmClient
) -> None:
    pipeline_arm.script_job(JOB, job_state(JOB, "Running"))
    poll, clock = _poll(timeout_s=300)
    with pytest.raises(OperationTimedOut) as caught:
        wait_for_job(arm_client, PATH, WORKSPACE_ID, poll)
    assert f"training job {JOB} still Running after 300 s; it keeps running" in str(caught.value)
    assert "Raise phi3-foundry:trainingTimeoutMinutes, or set waitForTraining false" in str(
        caught.value
    )
    assert clock.now <= 300


def test_throttling_and_outages_only_delay_the_next_look(
    pipeline_arm: PipelineArm, arm_client: ArmClient
) -> None:
    pipeline_arm.script_job(JOB, job_state(JOB, "Running"), job_state(JOB, "Completed"))
    # More 429s than the client's own retries: the waiter must ride them out.
    pipeline_arm.fake.fail(429, times=5, retry_after="0", path_contains="/jobs/")
    job = wait_for_job(arm_client, PATH, WORKSPACE_ID, _poll()[0])
    assert job["properties"]["status"] == "Completed"


def test_a_job_that_does_not_exist_fails_at_once(
    pipeline_arm: PipelineArm, arm_client: ArmClient
) -> None:
    with pytest.raises(ArmNotFoundError, match="404"):
        wait_for_job(arm_client, PATH, WORKSPACE_ID, _poll()[0])


def _running_for(minutes: int) -> list[dict[str, Any]]:
    """Queued, then Running for `minutes` looks a minute apart, then Completed."""
    running = [job_state(JOB, "Running")] * minutes
    return [job_state(JOB, "Queued"), *running, job_state(JOB, "Completed")]


def test_a_token_that_expires_mid_wait_is_replaced_and_the_wait_goes_on(
    pipeline_arm: PipelineArm,
) -> None:
    """A 12-hour wait outlives the hour an Entra access token lasts; ARM refusing the old token
    (401 ExpiredAuthenticationToken) must cost one new sign-in, not the wait."""
    poll, clock = _poll(timeout_s=12 * 3600)
    fake = pipeline_arm.fake
    fake.clock = clock  # ARM's time is the wait's
    credential = ExpiringTokens(fake, lifetime_s=3600)
    pipeline_arm.script_job(JOB, *_running_for(150))
    with fake.client(credential) as client:
        job = wait_for_job(client, PATH, WORKSPACE_ID, poll)
    assert job["properties"]["status"] == "Completed"
    refused = [call for call in fake.calls if call.status == 401]
    assert len(refused) == 2  # at 60 and at 120 minutes
    assert credential.requests == 3


class _SignInThatStops(ExpiringTokens):
    """Signs in once; every later sign-in fails as an OIDC sign-in does once the federated
    token it was given has expired (GitHub's lasts five minutes: Azure/login#372, AADSTS700024)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        if self.requests:
            raise ClientAuthenticationError(
                "AADSTS700024: Client assertion is not within its valid time range."
            )
        return super().get_token(*scopes, **kwargs)


def test_a_sign_in_that_stops_working_ends_the_wait_saying_how_to_resume(
    pipeline_arm: PipelineArm,
) -> None:
    poll, clock = _poll(timeout_s=12 * 3600)
    fake = pipeline_arm.fake
    fake.clock = clock
    pipeline_arm.script_job(JOB, *_running_for(600))
    client = fake.client(_SignInThatStops(fake, lifetime_s=3600))
    with client, pytest.raises(ArmAuthError) as caught:
        wait_for_job(client, PATH, WORKSPACE_ID, poll)
    message = str(caught.value)
    assert f"the sign-in failed {AUTH_FAILURES_TOLERATED} times in a row" in message
    assert "AADSTS700024" in message
    assert "It keeps running in Azure: sign in again" in message
    # The token's hour, then a few looks one interval apart: neither one look nor hours of them.
    assert clock.now == 3600 + 60 * (AUTH_FAILURES_TOLERATED - 1)


def test_a_missing_role_ends_the_wait_at_once(
    pipeline_arm: PipelineArm, arm_client: ArmClient, credential: FixedToken
) -> None:
    pipeline_arm.script_job(JOB, job_state(JOB, "Running"), job_state(JOB, "Completed"))
    pipeline_arm.fake.fail(403, times=1, path_contains="/jobs/")
    poll, clock = _poll()
    with pytest.raises(ArmAuthError) as caught:
        wait_for_job(arm_client, PATH, WORKSPACE_ID, poll)
    assert caught.value.status == 403
    assert clock.sleeps == [] and credential.requests == 1
