"""scripts/plan.py: the offline plan a user reads before `pulumi up`."""

from __future__ import annotations

import json

import pytest

from scripts import plan


def test_json_plan_lists_every_resource_with_roles_and_policy_results(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert plan.main(["--stack", "eastus2", "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert report["stack"] == "eastus2"
    assert report["count"] == len(report["resources"]) == 21
    assert report["policyViolations"] == []
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
    assert ("hub", "STORAGE_BLOB_DATA_CONTRIBUTOR", "storageAccounts") in assignments
    assert len(assignments) == 7


def test_text_plan_covers_all_example_stacks(capsys: pytest.CaptureFixture[str]) -> None:
    assert plan.main([]) == 0
    out = capsys.readouterr().out
    for stack in ("eastus2", "swedencentral"):
        assert f"stack {stack}: 21 resources" in out
    assert out.count("policies: PASS") == 2
    assert "ACR_PULL -> registries/phi3acr" in out
    assert "(principal: identity, ServicePrincipal)" in out
    assert "allowSharedKeyAccess=False" in out
    assert "vmSize=Standard_NC24ads_A100_v4" in out and "minNodeCount=0" in out
    assert "gpuReservedVcpus = 24" in out


def test_unknown_stack_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        plan.main(["--stack", "mars"])
    assert exited.value.code == 2
    assert "invalid choice: 'mars'" in capsys.readouterr().err
