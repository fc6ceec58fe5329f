"""The wait for the training job's end inside `pulumi up`, as a dynamic step."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi.dynamic

from phi3_infra.azure.arm import Poll, client_from_environment
from phi3_infra.azure.waiting import wait_for_job
from phi3_infra.steps.base import Step

_POLL_INTERVAL_S = 60


class _JobCompletionProvider(Step):
    """Blocks `pulumi up` until the job completes; fails with the job's error and log link."""

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        with client_from_environment() as client:
            job = wait_for_job(
                client,
                props["job_id"],
                props["workspace_id"],
                Poll(timeout_s=float(props["timeout_s"]), interval_s=_POLL_INTERVAL_S),
            )
        return pulumi.dynamic.CreateResult(
            id_=props["job_id"], outs={**props, "status": job["properties"]["status"]}
        )

    # A new job is a new wait; a changed timeout alone does not re-wait a finished job.
    replaced_by = ("job_id",)


class JobCompletion(pulumi.dynamic.Resource):
    status: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        job_id: pulumi.Input[str],
        workspace_id: pulumi.Input[str],
        timeout_s: int,
        opts: pulumi.ResourceOptions,
    ) -> None:
        props = {
            "job_id": job_id,
            "workspace_id": workspace_id,
            "timeout_s": timeout_s,
            "status": None,
        }
        super().__init__(_JobCompletionProvider(), name, props, opts)
