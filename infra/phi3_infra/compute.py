"""The GPU AmlCompute cluster the fine-tuning jobs run on.

Scales from zero, runs as the workload's user-assigned identity (image pulls, data mounts), has no
SSH and no local auth. Azure ignores in-place VM size or priority changes, so either one replaces
the cluster (deleted first: the name stays the same).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
from pulumi_azure_native import machinelearningservices as ml

from phi3_infra.identity import runs_as

COMPONENT_TYPE = "phi3:compute:GpuCluster"
# AmlCompute names: 2-16 characters, letters, digits and hyphens, starting with a letter.
_COMPUTE_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]{1,15}$")
# Azure size names carry the vCPU count after the family letters: Standard_NC24ads_A100_v4 -> 24;
# constrained sizes name the real count after a hyphen: Standard_E4-2s_v3 -> 2.
_SIZE_VCPUS = re.compile(r"^Standard_[A-Z]+(\d+)(?:-(\d+))?")
# Inputs Azure does not change in place: a change must replace the cluster.
REPLACE_ON_CHANGES = ["properties.properties.vmSize", "properties.properties.vmPriority"]


def vcpus_per_node(vm_size: str) -> int:
    """vCPUs of one node, read from the Azure size name (for the offline plan; the preflight
    uses the vmSizes API's figure)."""
    match = _SIZE_VCPUS.match(vm_size)
    if match is None:
        raise ValueError(
            f"cannot read a vCPU count from VM size {vm_size!r} (Standard_<family><n>…)"
        )
    return int(match.group(2) or match.group(1))


# GPUs per node of the usual fine-tuning sizes, for runs where no preflight asked Azure (the
# preflight reads the count from the vmSizes API).
KNOWN_GPUS_PER_NODE = {
    "Standard_NC24ads_A100_v4": 1,
    "Standard_NC48ads_A100_v4": 2,
    "Standard_NC96ads_A100_v4": 4,
    "Standard_NC40ads_H100_v5": 1,
    "Standard_NC80adis_H100_v5": 2,
    "Standard_ND96asr_v4": 8,
    "Standard_ND96amsr_A100_v4": 8,
    "Standard_ND96isr_H100_v5": 8,
}


def reserved_vcpus(vm_size: str, max_nodes: int, per_node: int | None = None) -> int:
    """Quota vCPUs the cluster can hold at full scale: vCPUs per node x max nodes."""
    return (per_node if per_node is not None else vcpus_per_node(vm_size)) * max_nodes


@dataclass(frozen=True)
class GpuClusterArgs:
    resource_group_name: pulumi.Input[str]
    workspace_name: pulumi.Input[str]
    location: str
    vm_size: str
    max_nodes: int
    low_priority: bool
    idle_seconds_before_scale_down: int
    identity_id: pulumi.Input[str]  # user-assigned identity resource id
    tags: Mapping[str, str]
    compute_name: str = "gpu-cluster"
    vcpus_per_node: int | None = None  # from the preflight; else read from the size name
    # Role assignments the nodes need before they pull images or mount data.
    depends_on: Sequence[pulumi.Resource] = ()

    def __post_init__(self) -> None:
        problems = []
        if not _COMPUTE_NAME.match(self.compute_name):
            problems.append(
                f"compute_name {self.compute_name!r}: 2-16 letters, digits or hyphens, "
                "starting with a letter"
            )
        if self.max_nodes < 1:
            problems.append(f"max_nodes is {self.max_nodes}; it must be at least 1")
        if self.idle_seconds_before_scale_down < 0:
            problems.append(
                f"idle_seconds_before_scale_down is {self.idle_seconds_before_scale_down}; "
                "it cannot be negative"
            )
        try:
            reserved_vcpus(self.vm_size, self.max_nodes, self.vcpus_per_node)
        except ValueError as error:
            problems.append(str(error))
        if problems:
            raise ValueError("invalid GPU cluster arguments: " + "; ".join(problems))


class GpuCluster(pulumi.ComponentResource):
    """AmlCompute with min 0 nodes; `reserved_vcpus` is the quota it can draw at full scale."""

    compute: ml.Compute
    reserved_vcpus: int

    def __init__(
        self, name: str, args: GpuClusterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(COMPONENT_TYPE, name, None, opts)
        priority = ml.VmPriority.LOW_PRIORITY if args.low_priority else ml.VmPriority.DEDICATED
        self.reserved_vcpus = reserved_vcpus(args.vm_size, args.max_nodes, args.vcpus_per_node)
        self.compute = ml.Compute(
            f"{name}-amlcompute",
            resource_group_name=args.resource_group_name,
            workspace_name=args.workspace_name,
            compute_name=args.compute_name,
            location=args.location,
            tags=dict(args.tags),
            identity=runs_as(args.identity_id),
            properties=ml.AmlComputeArgs(
                compute_type="AmlCompute",
                description=f"Phi-3 fine-tuning: {args.vm_size}, up to {args.max_nodes} node(s)",
                disable_local_auth=True,
                properties=ml.AmlComputePropertiesArgs(
                    vm_size=args.vm_size,
                    vm_priority=priority,
                    os_type=ml.OsType.LINUX,
                    remote_login_port_public_access=ml.RemoteLoginPortPublicAccess.DISABLED,
                    scale_settings=ml.ScaleSettingsArgs(
                        min_node_count=0,
                        max_node_count=args.max_nodes,
                        node_idle_time_before_scale_down=(
                            f"PT{args.idle_seconds_before_scale_down}S"
                        ),
                    ),
                ),
            ),
            opts=pulumi.ResourceOptions(
                parent=self,
                replace_on_changes=REPLACE_ON_CHANGES,
                delete_before_replace=True,
                depends_on=list(args.depends_on),
            ),
        )
        self.register_outputs({
            "computeName": self.compute.name,
            "vmSize": args.vm_size,
            "reservedVcpus": self.reserved_vcpus,
        })  # fmt: skip
