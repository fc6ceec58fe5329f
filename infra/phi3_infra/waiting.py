"""Wait for a long-running Azure operation (a training job, a registry build) to finish.

Plain functions over the ARM client, so the same code runs inside `pulumi up` (from a dynamic
resource) and in tests against the fake ARM server, with the clock and sleep injectable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from phi3_infra.arm import ArmClient, ArmThrottledError, ArmUnavailableError

ML_API_VERSION = "2024-10-01"
STUDIO_URL = "https://ml.azure.com"
# Azure ML job statuses after which nothing changes any more.
JOB_SUCCEEDED = frozenset({"Completed"})
JOB_FAILED = frozenset({"Failed", "Canceled", "NotResponding"})
TRAINING_TIMEOUT_ADVICE = (
    "Raise phi3-foundry:trainingTimeoutMinutes, or set waitForTraining false and follow it in "
    "the studio."
)


class OperationFailed(RuntimeError):
    """The operation ended without success; the message carries Azure's reason and a log link."""


class OperationTimedOut(TimeoutError):
    """The operation was still running when the wait ran out; it keeps running in Azure."""


@dataclass(frozen=True)
class Poll:
    """How to wait: at most `timeout_s`, asking every `interval_s`."""

    timeout_s: float
    interval_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


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
    delay the next ask. On timeout the error names `what` and ends with the caller's `advice`:
    only the caller knows which setting or command helps with its operation."""
    deadline = poll.clock() + poll.timeout_s
    last_status = "unknown"
    while True:
        try:
            state = client.get_json(path, api_version)
        except (ArmThrottledError, ArmUnavailableError):
            state = None
        if state is not None:
            last_status = str(state.get("properties", {}).get(status_key, "unknown"))
            if last_status in terminal:
                return state
        if poll.clock() + poll.interval_s > deadline:
            raise OperationTimedOut(
                f"{what} still {last_status} after {poll.timeout_s:.0f} s; it keeps running in "
                f"Azure. {advice}"
            )
        poll.sleep(poll.interval_s)


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
