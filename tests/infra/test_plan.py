"""scripts/plan.py: the offline plan a user reads before `pulumi up`."""

from __future__ import annotations

import json

import pytest

from phi3_infra.cli import plan

# eastus2 runs the whole pipeline; swedencentral is infrastructure only.
EASTUS2_RESOURCES = 43
SWEDENCENTRAL_RESOURCES = 18


def test_json_plan_lists_every_resource_with_roles_and_policy_results(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert plan.main(["--stack", "eastus2", "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert report["stack"] == "eastus2"
    assert report["count"] == len(report["resources"]) == EASTUS2_RESOURCES
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
    assert ("identity", "CONTRIBUTOR", "resourceGroups") in assignments
    assert ("identity", "ACR_PULL", "registries") in assignments
    # The endpoint pulls its image and reads its model as its own identity.
    assert ("endpoint-identity", "ACR_PULL", "registries") in assignments
    assert ("endpoint-identity", "STORAGE_BLOB_DATA_READER", "storageAccounts") in assignments
    # The data upload runs as whoever runs `pulumi up`.
    assert ("deployer", "STORAGE_BLOB_DATA_CONTRIBUTOR", "storageAccounts") in assignments
    # The training job writes its outputs as the workload identity.
    assert ("identity", "STORAGE_BLOB_DATA_CONTRIBUTOR", "storageAccounts") in assignments
    assert len(assignments) == 7  # none for the hub's and project's own identities


def test_text_plan_covers_all_example_stacks(capsys: pytest.CaptureFixture[str]) -> None:
    assert plan.main([]) == 0
    out = capsys.readouterr().out
    assert f"stack eastus2: {EASTUS2_RESOURCES} resources" in out
    assert f"stack swedencentral: {SWEDENCENTRAL_RESOURCES} resources" in out
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
