"""Wait for a long-running Azure operation (a training job, a registry build) to finish, and
stop a training job that is still running.

Plain functions over the ARM client, so the same code runs inside `pulumi up` and `pulumi
destroy` (from a dynamic resource) and in tests against the fake ARM server, with the clock and
sleep injectable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from phi3_infra.azure.api_versions import ML_API_VERSION
from phi3_infra.azure.arm import (
    ArmAuthError,
    ArmClient,
    ArmError,
    ArmNotFoundError,
    ArmThrottledError,
    ArmUnavailableError,
    OperationFailed,
    Poll,
    timed_out,
)

STUDIO_URL = "https://ml.azure.com"
# Provisioning states after which an ML resource's provisioning has ended.
PROVISIONING_ENDED = frozenset({"Succeeded", "Failed", "Canceled"})
# Azure ML job statuses after which nothing changes any more.
JOB_SUCCEEDED = frozenset({"Completed"})
JOB_FAILED = frozenset({"Failed", "Canceled", "NotResponding"})
# Statuses after which a job holds no compute (JobStatus in the ML REST spec, mfe.json): a job
# that is NotResponding may still hold its nodes, so it is cancelled like a running one.
JOB_STOPPED = frozenset({"Completed", "Failed", "Canceled"})
TRAINING_TIMEOUT_ADVICE = (
    "Raise phi3-foundry:trainingTimeoutMinutes, or set waitForTraining false: `pulumi up` then "
    "returns, and a later one registers and serves the model once the job has completed."
)
CANCEL_ADVICE = (
    "Run `pulumi destroy` again once the job shows Canceled in the studio, or cancel it there."
)
# Looks in a row that may fail to sign in before a wait gives up. The client already asked for a
# fresh token once per look (arm.py); a failure after that is a sign-in that does not work now
# (Entra ID or the CI's token endpoint down for a moment, or gone for good), so a few looks, one
# poll interval apart, ride out the first without hiding the second for long.
AUTH_FAILURES_TOLERATED = 3


def poll_until_terminal(
    client: ArmClient,
    path: str,
    api_version: str,
    terminal: frozenset[str],
    poll: Poll,
    what: str,
    advice: str,
    status_key: str = "status",
) -> Mapping[str, Any]:
    """GET `path` until `properties.<status_key>` is terminal; ARM throttling or outages only
    delay the next ask, and so does a sign-in that fails (a token refused with 401 even when
    fresh, or none to be had) up to AUTH_FAILURES_TOLERATED looks in a row; a 403 (a missing
    role) ends the wait at once. On timeout the error names `what` and ends with the caller's
    `advice`: only the caller knows which setting or command helps with its operation."""
    deadline = poll.clock() + poll.timeout_s
    last_status = "unknown"
    auth_failures = 0
    while True:
        try:
            state = client.get_json(path, api_version)
            auth_failures = 0
        except (ArmThrottledError, ArmUnavailableError):
            state = None
        except ArmAuthError as error:
            auth_failures += 1
            if error.status == 403 or auth_failures >= AUTH_FAILURES_TOLERATED:
                raise _sign_in_failed(what, auth_failures, error) from None
            state = None
        if state is not None:
            last_status = str(state.get("properties", {}).get(status_key, "unknown"))
            if last_status in terminal:
                return state
        if poll.clock() + poll.interval_s > deadline:
            raise timed_out(what, last_status, poll, advice)
        poll.sleep(poll.interval_s)


def _sign_in_failed(what: str, failures: int, error: ArmAuthError) -> ArmAuthError:
    """The wait's end for lack of a working sign-in: what still runs, and how to resume."""
    if error.status == 403:
        return ArmAuthError(f"waiting for {what}: {error}", status=403, code=error.code)
    return ArmAuthError(
        f"waiting for {what}: the sign-in failed {failures} times in a row (last: {error}). "
        "It keeps running in Azure: sign in again (`az login`, or the ARM_* settings) and run "
        "the same command again to resume the wait.",
        status=error.status,
        code=error.code,
    )


def studio_run_url(job_name: str, workspace_id: str) -> str:
    """A job's page in Azure ML studio, in the documented URL form."""
    return f"{STUDIO_URL}/runs/{job_name}?wsid={workspace_id}"


def studio_link(job: Mapping[str, Any], workspace_id: str) -> str:
    """The job's studio page as Azure reports it, else the documented URL form."""
    services = job.get("properties", {}).get("services") or {}
    endpoint = (services.get("Studio") or {}).get("endpoint")
    return str(endpoint) if endpoint else studio_run_url(str(job["name"]), workspace_id)


def job_error(job: Mapping[str, Any]) -> str:
    """The reason Azure gives for a failed job: the job's error, else a service's error."""
    properties = job.get("properties", {})
    error = properties.get("error") or {}
    if error.get("message"):
        return str(error["message"])
    for service in (properties.get("services") or {}).values():
        if (service or {}).get("errorMessage"):
            return str(service["errorMessage"])
    return "Azure gave no error message"


def wait_for_job(client: ArmClient, path: str, workspace_id: str, poll: Poll) -> dict[str, Any]:
    """Wait until the job at ARM `path` completes; raise with its error and studio link if not."""
    name = path.rsplit("/", 1)[-1]
    job = poll_until_terminal(
        client,
        path,
        ML_API_VERSION,
        JOB_SUCCEEDED | JOB_FAILED,
        poll,
        f"training job {name}",
        advice=TRAINING_TIMEOUT_ADVICE,
    )
    status = job["properties"]["status"]
    if status in JOB_FAILED:
        raise OperationFailed(
            f"training job {name} {status}: {job_error(job)}\n"
            f"logs: {studio_link(job, workspace_id)} (Outputs + logs > user_logs/std_log.txt)"
        )
    return dict(job)


def cancel_job(client: ArmClient, path: str, poll: Poll) -> str | None:
    """Cancel the job at ARM `path` unless it has stopped already, and wait until it has;
    returns the status it ends in, or None when there is no such job. Jobs_Cancel is a
    long-running POST (202 and Location; azure-rest-api-specs machinelearningservices mfe.json,
    examples/Job/cancel.json); the job reaches Canceled only after it (CancelRequested between)."""
    name = path.rsplit("/", 1)[-1]
    try:
        status = _job_status(client, path)
    except ArmNotFoundError:
        return None
    if status in JOB_STOPPED:
        return status
    what = f"cancelling training job {name}"
    try:
        client.post_and_wait(f"{path}/cancel", ML_API_VERSION, poll, what, advice=CANCEL_ADVICE)
    except ArmError:
        # The job may have stopped between the look and the request: then nothing is left to do.
        status = _job_status(client, path)
        if status not in JOB_STOPPED:
            raise
        return status
    job = poll_until_terminal(
        client, path, ML_API_VERSION, JOB_STOPPED, poll, f"training job {name}", CANCEL_ADVICE
    )
    return str(job["properties"]["status"])


def _job_status(client: ArmClient, path: str) -> str:
    return str(client.get_json(path, ML_API_VERSION)["properties"]["status"])
