"""scripts/plan.py: the offline plan a user reads before `pulumi up`."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from phi3_infra.cli import plan

# The components of each stage (infra/README.md, the table at the top).
INFRA_COMPONENTS = {
    "phi3:infra:Foundation",
    "phi3:infra:WorkloadIdentity",
    "phi3:infra:FoundryWorkspace",
}
PIPELINE_COMPONENTS = {
    "phi3:images:ContainerImages",
    "phi3:data:TrainingData",
    "phi3:training:TrainingJob",
    "phi3:serving:EndpointIdentity",
    "phi3:serving:ServingEndpoint",
}


def _json_plans(capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, Any]]:
    assert plan.main(["--stack", "eastus2", "--stack", "swedencentral", "--json"]) == 0
    return {report["stack"]: report for report in json.loads(capsys.readouterr().out)}


def test_json_plan_lists_every_resource_with_roles_and_policy_results(
    capsys: pytest.CaptureFixture[str],
) -> None:
    plans = _json_plans(capsys)
    report = plans["eastus2"]
    assert report["count"] == len(report["resources"])
    # eastus2 runs the whole pipeline, swedencentral the infrastructure alone.
    components = {stack: {r["type"] for r in plans[stack]["resources"]} for stack in plans}
    assert components["eastus2"] >= INFRA_COMPONENTS | PIPELINE_COMPONENTS
    assert components["swedencentral"] >= INFRA_COMPONENTS
    assert not PIPELINE_COMPONENTS & components["swedencentral"]
    assert report["policyViolations"] == []
    assert report["costPerHour"]["perHour"]["idle"] < report["costPerHour"]["perHour"]["training"]
    storage = next(r for r in report["resources"] if r["name"] == "storage")
    assert storage["location"] == "eastus2"
    assert storage["parent"] == "foundation"
    assert storage["properties"]["allowSharedKeyAccess"] is False
    assignments = {
        (r["principal"], r["role"], r["scope"].rsplit("/", 2)[-2])
        for r in report["resources"]
        if r["type"] == "azure-native:authorization:RoleAssignment"
    }
    # Every role the stack needs, and nothing else: none for the hub's and project's own
    # identities (Azure makes those), no push role for a remote build.
    assert assignments == {
        ("identity", "CONTRIBUTOR", "resourceGroups"),
        ("identity", "STORAGE_BLOB_DATA_READER", "storageAccounts"),
        ("identity", "ACR_PULL", "registries"),
        # The training job writes its outputs as the workload identity.
        ("identity", "STORAGE_BLOB_DATA_CONTRIBUTOR", "storageAccounts"),
        # The endpoint pulls its image and reads its model as its own identity.
        ("endpoint-identity", "ACR_PULL", "registries"),
        ("endpoint-identity", "STORAGE_BLOB_DATA_READER", "storageAccounts"),
        # The data upload runs as whoever runs `pulumi up`.
        ("deployer", "STORAGE_BLOB_DATA_CONTRIBUTOR", "storageAccounts"),
    }


def test_text_plan_covers_all_example_stacks(capsys: pytest.CaptureFixture[str]) -> None:
    counts = {stack: report["count"] for stack, report in _json_plans(capsys).items()}
    assert plan.main([]) == 0
    out = capsys.readouterr().out
    shown = {
        m["stack"]: int(m["count"])
        for m in re.finditer(r"stack (?P<stack>\w+): (?P<count>\d+) resources", out)
    }
    assert shown.items() >= counts.items()
    stacks = len(plan.example_stacks())  # eastus2, swedencentral and the demo stack
    assert stacks == 3 and "stack demo: " in out
    assert out.count("policies: PASS") == stacks
    assert out.count("estimated cost per hour") == stacks
    assert "ACR_PULL -> registries/phi3acr" in out
    assert "(principal: identity, ServicePrincipal)" in out
    assert "allowSharedKeyAccess=False" in out
    assert "gpuVmSize = Standard_NC24ads_A100_v4" in out


def test_text_plan_shows_the_whole_pipeline(capsys: pytest.CaptureFixture[str]) -> None:
    """Images, data, job, model, endpoint, deployment, traffic and purge, in one plan."""
    assert plan.main(["--stack", "eastus2"]) == 0
    out = capsys.readouterr().out
    for line in (
        "image=phi3-trainer:",
        "image=phi3-server:",
        "dataUri=https://phi3st",
        "resources.instanceType=Standard_NC24ads_A100_v4 resources.instanceCount=1",
        "queueSettings.jobTier=Standard",
        "command=python -m phi3_trainer --train_file ${{inputs.train}}",
        "modelUri=azureml://jobs/phi3-ft-",
        "authMode=Key identity.type=UserAssigned",
        "instanceType=Standard_E4s_v3",
        "requestTimeout=PT90S",
        "deployment_name=phi3",
        "purge_key_vault=True",
        "scoringUri = https://ep-phi3-",
        "openAiBaseUrl = https://ep-phi3-",
    ):
        assert line in out, line


def test_unknown_stack_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        plan.main(["--stack", "mars"])
    assert exited.value.code == 2
    assert "invalid choice: 'mars'" in capsys.readouterr().err
