"""The offline mocks answer like ARM for what programs read back."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from pulumi.runtime.mocks import MockResourceArgs

from phi3_infra.cli.plan import plan_stack
from phi3_infra.stack_files import stack_file_config
from phi3_infra.tooling.offline import SUBSCRIPTION_ID, AzureMocks

GROUP = f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/rg"
IDENTITY = f"{GROUP}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id"


def test_child_resource_ids_nest_under_their_parent_and_identities_become_a_map() -> None:
    inputs = {
        "resourceGroupName": "rg",
        "workspaceName": "proj",
        "computeName": "gpu-cluster",
        "identity": {"type": "UserAssigned", "userAssignedIdentities": [IDENTITY]},
    }
    arm_id, state = AzureMocks().new_resource(
        MockResourceArgs("azure-native:machinelearningservices:Compute", "gpu", inputs)
    )
    assert arm_id == (
        f"{GROUP}/providers/Microsoft.MachineLearningServices/workspaces/proj/computes/gpu-cluster"
    )
    assert state["name"] == "gpu-cluster"
    (user,) = state["identity"]["userAssignedIdentities"].items()
    assert user[0] == IDENTITY
    assert set(user[1]) == {"principalId", "clientId"}


def test_system_identity_gets_a_stable_principal_and_unknown_types_still_get_ids() -> None:
    mocks = AzureMocks()
    workspace = MockResourceArgs(
        "azure-native:machinelearningservices:Workspace",
        "hub",
        {
            "resourceGroupName": "rg",
            "workspaceName": "hub-x",
            "identity": {"type": "SystemAssigned"},
        },
    )
    first, second = mocks.new_resource(workspace)[1], mocks.new_resource(workspace)[1]
    assert first["identity"]["principalId"] == second["identity"]["principalId"]
    arm_id, _ = mocks.new_resource(
        MockResourceArgs("azure-native:network:VirtualNetwork", "vnet", {"resourceGroupName": "rg"})
    )
    assert arm_id == f"{GROUP}/providers/Mock.network/VirtualNetwork/vnet"


@pytest.fixture
def full_pipeline_config(repo_root: Path) -> dict[str, str]:
    return stack_file_config(repo_root / "Pulumi.eastus2.yaml")


def test_planning_leaves_the_pure_python_pickler_as_it_found_it(
    full_pipeline_config: dict[str, str],
) -> None:
    """pulumi.dynamic wraps the pickler's dict writer once more per provider it stores; left in
    place, hundreds of plans in one process (the test suite) nest those wrappers until dill or
    `datasets` fingerprinting fails with RecursionError."""
    before = pickle._Pickler._batch_setitems  # type: ignore[attr-defined]
    for _ in range(3):
        run = plan_stack(full_pipeline_config, "eastus2")
    assert any(r.type.startswith("pulumi-python:dynamic") for r in run.resources)
    assert pickle._Pickler._batch_setitems is before  # type: ignore[attr-defined]
    # A deeply nested structure still pickles: no wrapper chain left in the way.
    nested: dict[str, object] = {}
    for _ in range(200):
        nested = {"child": nested}
    assert pickle.loads(pickle._dumps(nested)) == nested  # type: ignore[attr-defined]
