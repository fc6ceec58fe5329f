"""`pulumi destroy` stops a training job that still runs: it cancels it (Jobs_Cancel, followed to
its end) and waits until the job is Canceled; a job that has stopped is left alone."""

from __future__ import annotations

import pytest

from phi3_infra.azure.arm import ArmClient
from phi3_infra.azure.waiting import cancel_job
from phi3_infra.steps import teardown
from phi3_infra.steps.teardown import _JobCancellationProvider
from tests.fakes.arm_pipeline import PipelineArm, job_state
from tests.fakes.arm_server import SUBSCRIPTION_ID, FakeArm
from tests.fakes.clock import fake_poll

JOB = "phi3-ft-0123456789abcdef"
PATH = (
    f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/rg/providers/"
    f"Microsoft.MachineLearningServices/workspaces/proj/jobs/{JOB}"
)


def _statuses_seen(fake: FakeArm) -> list[tuple[str, int]]:
    return [(c.method, c.status) for c in fake.calls_to(f"/jobs/{JOB}")]


def test_destroy_cancels_a_running_job_and_waits_until_it_is_canceled(
    signed_in_env: FakeArm, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = PipelineArm(signed_in_env).install()
    pipeline.script_job(JOB, job_state(JOB, "Running"))
    poll, clock = fake_poll(interval_s=30)
    monkeypatch.setattr(teardown, "JOB_CANCEL_POLL", poll)
    _JobCancellationProvider().delete(f"cancel-{PATH}", {"job_id": PATH})
    assert [c.path.rsplit("/", 1)[-1] for c in signed_in_env.calls if c.method == "POST"] == [
        "cancel"
    ]
    # Look, cancel (202 + Location: the job), follow the Location, then wait for Canceled.
    assert _statuses_seen(signed_in_env) == [
        ("GET", 200),
        ("POST", 202),
        ("GET", 200),
        ("GET", 200),
    ]
    assert pipeline.jobs[JOB][-1]["properties"]["status"] == "Canceled"
    # The cancel's 202 names no Retry-After: the one wait is the poll interval.
    assert clock.sleeps == [30]


def test_the_job_is_waited_for_until_it_has_stopped(
    pipeline_arm: PipelineArm, arm_client: ArmClient
) -> None:
    pipeline_arm.script_job(JOB, job_state(JOB, "Queued"))
    assert cancel_job(arm_client, PATH, fake_poll()[0]) == "Canceled"
    # CancelRequested is not the end: the wait went on to Canceled.
    assert len(pipeline_arm.fake.calls_to(f"/jobs/{JOB}")) == 4


@pytest.mark.parametrize("status", ["Completed", "Failed", "Canceled"])
def test_a_job_that_has_stopped_is_not_cancelled(
    pipeline_arm: PipelineArm, arm_client: ArmClient, status: str
) -> None:
    pipeline_arm.script_job(JOB, job_state(JOB, status))
    assert cancel_job(arm_client, PATH, fake_poll()[0]) == status
    assert not pipeline_arm.fake.calls_to("/cancel")


def test_a_job_that_is_not_there_needs_no_cancel(
    pipeline_arm: PipelineArm, arm_client: ArmClient
) -> None:
    assert cancel_job(arm_client, PATH, fake_poll()[0]) is None
    assert not pipeline_arm.fake.calls_to("/cancel")
