"""The GPU cluster under Pulumi mocks, and the preflight gating it the way the program does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pulumi
import pytest
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.rpc import deserialize_properties

from phi3_infra.compute import GpuCluster, GpuClusterArgs, reserved_vcpus, vcpus_per_node
from phi3_infra.offline import AzureMocks
from tests.fakes.arm_server import SUBSCRIPTION_ID

IDENTITY_ID = (
    f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/rg-phi3/providers/"
    "Microsoft.ManagedIdentity/userAssignedIdentities/id-phi3"
)
COMPUTE = "azure-native:machinelearningservices:Compute"


class RegistrationMonitor(MockMonitor):
    """Keeps every registration request, with the options (parent, replaceOnChanges) that
    Mocks.new_resource does not see."""

    def __init__(self) -> None:
        super().__init__(AzureMocks())
        self.requests: list[Any] = []

    def RegisterResource(self, request: Any) -> Any:
        if request.type != "pulumi:pulumi:Stack":
            self.requests.append(request)
        return super().RegisterResource(request)

    def of_type(self, token: str) -> list[Any]:
        return [request for request in self.requests if request.type == token]


def run_program(
    program: Callable[[], object], monitor: RegistrationMonitor | None = None
) -> RegistrationMonitor:
    monitor = monitor or RegistrationMonitor()
    pulumi.runtime.reset_options(project="phi3-foundry", stack="preflight-test")
    pulumi.runtime.set_mocks(
        monitor.mocks, "phi3-foundry", "preflight-test", False, monitor=monitor
    )

    @pulumi.runtime.test
    def execute() -> pulumi.Output[object]:
        return pulumi.Output.from_input(program())

    execute()
    return monitor


def cluster_args(**changes: Any) -> GpuClusterArgs:
    values: dict[str, Any] = {
        "resource_group_name": "rg-phi3",
        "workspace_name": "proj-phi3",
        "location": "eastus2",
        "vm_size": "Standard_NC24ads_A100_v4",
        "max_nodes": 2,
        "low_priority": False,
        "idle_seconds_before_scale_down": 300,
        "identity_id": IDENTITY_ID,
        "tags": {"owner": "ml-team"},
    }
    return GpuClusterArgs(**(values | changes))


def test_cluster_scales_from_zero_as_the_identity_without_ssh() -> None:
    clusters: list[GpuCluster] = []
    monitor = run_program(lambda: clusters.append(GpuCluster("gpu", cluster_args())))
    (request,) = monitor.of_type(COMPUTE)
    inputs = deserialize_properties(request.object)
    assert inputs["computeName"] == "gpu-cluster" and inputs["location"] == "eastus2"
    assert inputs["resourceGroupName"] == "rg-phi3" and inputs["workspaceName"] == "proj-phi3"
    assert inputs["tags"] == {"owner": "ml-team"}
    assert inputs["identity"] == {"type": "UserAssigned", "userAssignedIdentities": [IDENTITY_ID]}
    compute = inputs["properties"]
    assert compute["computeType"] == "AmlCompute" and compute["disableLocalAuth"] is True
    assert compute["properties"] == {
        "vmSize": "Standard_NC24ads_A100_v4",
        "vmPriority": "Dedicated",
        "osType": "Linux",
        "remoteLoginPortPublicAccess": "Disabled",
        "enableNodePublicIp": True,
        "scaleSettings": {
            "minNodeCount": 0,
            "maxNodeCount": 2,
            "nodeIdleTimeBeforeScaleDown": "PT300S",
        },
    }
    (component,) = monitor.of_type("phi3:compute:GpuCluster")
    assert request.parent.endswith("phi3:compute:GpuCluster::gpu")
    assert not component.custom
    assert clusters[0].reserved_vcpus == 48


def test_size_or_priority_change_replaces_the_cluster_delete_first() -> None:
    monitor = run_program(lambda: GpuCluster("gpu", cluster_args(low_priority=True)))
    (request,) = monitor.of_type(COMPUTE)
    assert deserialize_properties(request.object)["properties"]["properties"]["vmPriority"] == (
        "LowPriority"
    )
    assert set(request.replaceOnChanges) == {
        "properties.properties.vmSize",
        "properties.properties.vmPriority",
    }
    # The name stays the same, so the old cluster must go before the new one is created.
    assert request.deleteBeforeReplace


@pytest.mark.parametrize(
    ("vm_size", "vcpus"),
    [
        ("Standard_NC24ads_A100_v4", 24),
        ("Standard_NC96ads_A100_v4", 96),
        ("Standard_NC6s_v3", 6),
        ("Standard_ND96asr_v4", 96),
        ("Standard_E4-2s_v3", 2),  # constrained vCPU size: the second number is the real count
    ],
)
def test_vcpus_read_from_the_size_name(vm_size: str, vcpus: int) -> None:
    assert vcpus_per_node(vm_size) == vcpus
    assert reserved_vcpus(vm_size, 3) == 3 * vcpus


def test_preflight_figure_overrides_the_size_name() -> None:
    assert reserved_vcpus("Standard_NC24ads_A100_v4", 2, per_node=32) == 64


def test_bad_cluster_args_name_every_problem() -> None:
    with pytest.raises(ValueError) as caught:
        cluster_args(
            compute_name="9-bad", max_nodes=0, vm_size="A100", idle_seconds_before_scale_down=-1
        )
    message = str(caught.value)
    for fact in (
        "compute_name '9-bad'",
        "max_nodes is 0",
        "'A100'",
        "idle_seconds_before_scale_down is -1",
    ):
        assert fact in message
