"""The offline mocks answer like ARM for what programs read back."""

from __future__ import annotations

from pulumi.runtime.mocks import MockResourceArgs

from phi3_infra.offline import SUBSCRIPTION_ID, AzureMocks

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
