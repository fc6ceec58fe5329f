"""An unchanged configuration never re-picks the training size: a re-run finds the stack's job in
Azure by its name and keeps the size, tier and process count it was submitted with, whatever the
quota says now and whether or not the preflight runs (issue: stable choices).

The real program runs under Pulumi mocks; its preflight and job lookup ask the fake ARM server
through the real credential chain."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phi3_infra.program import build_stack
from phi3_infra.tooling import offline
from tests.fakes.arm_pipeline import PipelineArm
from tests.fakes.arm_server import FakeArm
from tests.fakes.examples import command_job

A100, H100 = "standardNCADSA100v4Family", "standardNCadsH100v5Family"
NC24, NC40_H100 = "Standard_NC24ads_A100_v4", "Standard_NC40ads_H100_v5"
TRAIN = {
    "azure-native:location": "eastus2",
    "phi3-foundry:owner": "team@contoso.com",
    "phi3-foundry:expiresOn": "2027-01-31",
    "phi3-foundry:stages": '["infra", "train"]',
    "phi3-foundry:gpuSkus": f'["{NC24}", "{NC40_H100}"]',
    "phi3-foundry:trainingData": "scripts/data/capitals_chat.jsonl",
}
JOB = "azure-native:machinelearningservices:Job"


@pytest.fixture
def fake_arm(tmp_path: Path) -> Iterator[FakeArm]:
    # The subscription the mocks' getClientConfig answers with, as `pulumi up` would see it.
    fake = FakeArm(subscription_id=offline.SUBSCRIPTION_ID)
    with fake.serving(tmp_path / "tls"):
        yield fake


def _job(run: offline.OfflineRun) -> tuple[str, dict[str, Any]]:
    (job,) = run.of_type(JOB)
    assert job.id is not None
    return job.id, job.inputs


def _inputs_by_urn(run: offline.OfflineRun) -> dict[str, dict[str, Any]]:
    return {resource.urn: resource.inputs for resource in run.resources}


def _submitted(arms: PipelineArm, run: offline.OfflineRun, status: str) -> None:
    """Azure now holds the job the run planned, as Jobs_Get returns it."""
    job_id, inputs = _job(run)
    properties = inputs["properties"]
    arms.script_job(
        inputs["id"],
        command_job(
            job_id,
            status=status,
            instance_type=properties["resources"]["instanceType"],
            instance_count=properties["resources"]["instanceCount"],
            queueSettings=properties["queueSettings"],
        ),
    )


@pytest.mark.parametrize("status", ["Running", "Completed"])
def test_a_quota_change_keeps_the_job_and_its_size(
    signed_in_env: FakeArm, pipeline_arm: PipelineArm, status: str
) -> None:
    signed_in_env.add_region("eastus2", quota={A100: (0, 24), H100: (0, 0)})
    first = offline.run_offline(build_stack, TRAIN, "eastus2")
    assert _job(first)[1]["properties"]["resources"]["instanceType"] == NC24
    _submitted(pipeline_arm, first, status)

    # The A100 quota went to another team; only H100 is free now.
    signed_in_env.add_region("eastus2", quota={A100: (24, 24), H100: (0, 40)})
    second = offline.run_offline(build_stack, TRAIN, "eastus2")
    assert _job(second) == _job(first)  # same name, same inputs: Pulumi sees no change
    assert second.outputs["gpuVmSize"] == NC24
    assert _inputs_by_urn(second) == _inputs_by_urn(first)  # nothing to replace anywhere


def test_toggling_skip_preflight_keeps_the_job_and_its_size(
    signed_in_env: FakeArm, pipeline_arm: PipelineArm
) -> None:
    # The first candidate has no quota: the preflight picks the H100 fallback.
    signed_in_env.add_region("eastus2", quota={A100: (0, 0), H100: (0, 40)})
    first = offline.run_offline(build_stack, TRAIN, "eastus2")
    assert _job(first)[1]["properties"]["resources"]["instanceType"] == NC40_H100
    _submitted(pipeline_arm, first, "Completed")

    unchecked = offline.run_offline(
        build_stack, TRAIN | {"phi3-foundry:skipPreflight": "true"}, "eastus2"
    )
    assert _job(unchecked) == _job(first)  # not the unchecked first candidate


def test_a_new_candidate_list_is_a_new_run_sized_afresh(
    signed_in_env: FakeArm, pipeline_arm: PipelineArm
) -> None:
    signed_in_env.add_region("eastus2", quota={A100: (0, 24), H100: (0, 40)})
    first = offline.run_offline(build_stack, TRAIN, "eastus2")
    _submitted(pipeline_arm, first, "Completed")
    moved = offline.run_offline(
        build_stack, TRAIN | {"phi3-foundry:gpuSkus": f'["{NC40_H100}"]'}, "eastus2"
    )
    name, inputs = _job(moved)
    assert name != _job(first)[0]
    assert inputs["properties"]["resources"]["instanceType"] == NC40_H100
