"""The Pulumi program: validate the configuration, then build one region's environment."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi_azure_native import authorization

from phi3_infra.arm import client_from_environment
from phi3_infra.compute import GpuCluster, GpuClusterArgs
from phi3_infra.config import ConfigError, StackConfig, load_stack_config
from phi3_infra.foundation import Foundation, FoundationArgs, OnFoundationArgs
from phi3_infra.identity import WorkloadIdentity
from phi3_infra.naming import StackNames, stack_names
from phi3_infra.preflight import (
    PreflightFailed,
    PreflightRequest,
    PreflightUnavailable,
    require_gpu_sku,
)
from phi3_infra.tags import stack_tags
from phi3_infra.workspace import FoundryWorkspace

GPU_CLUSTER_NAME = "gpu-cluster"
SKIPPED_PREFLIGHT_WARNING = (
    "skipPreflight is set: VM size, quota, resource-provider and soft-deleted-name checks are "
    "skipped, so a missing quota or a blocked name fails late, after other resources exist."
)


@dataclass(frozen=True)
class GpuChoice:
    """The VM size the cluster gets, and whether a preflight against Azure chose it."""

    vm_size: str
    vcpus_per_node: int | None
    checked: bool


Preflight = Callable[[StackConfig, StackNames], GpuChoice]


def quota_preflight(config: StackConfig, names: StackNames) -> GpuChoice:
    """Ask Azure, before any resource exists, which candidate size fits; raise if none does."""
    if config.skip_preflight:
        pulumi.log.warn(SKIPPED_PREFLIGHT_WARNING)
        return GpuChoice(config.gpu_skus[0], None, checked=False)
    # A blocking invoke, not a resource: the subscription is needed before anything is registered.
    subscription_id = authorization.get_client_config().subscription_id
    request = PreflightRequest(
        subscription_id=subscription_id,
        regions=(config.location,),
        skus=config.gpu_skus,
        max_nodes=config.max_nodes,
        low_priority=config.low_priority,
        key_vault_names=(names.key_vault,),
        workspace_names=(names.hub, names.project),
        compute_name=GPU_CLUSTER_NAME,
    )
    with client_from_environment() as client:
        chosen = require_gpu_sku(client, request)
    return GpuChoice(chosen.sku, chosen.vcpus_per_node, checked=True)


def offline_gpu_choice(config: StackConfig, names: StackNames) -> GpuChoice:
    """For the offline plan: no Azure to ask, so the first candidate stands in, unchecked."""
    return GpuChoice(config.gpu_skus[0], None, checked=False)


@dataclass(frozen=True)
class Environment:
    config: StackConfig
    names: StackNames
    tags: dict[str, str]
    foundation: Foundation
    identity: WorkloadIdentity
    workspace: FoundryWorkspace


def build_environment(config: StackConfig, names: StackNames) -> Environment:
    project, stack = pulumi.get_project(), pulumi.get_stack()
    tags = stack_tags(config, project, stack)
    client = authorization.get_client_config_output()
    foundation = Foundation(
        "foundation",
        FoundationArgs(
            names=names,
            location=config.location,
            tags=tags,
            tenant_id=client.tenant_id,
            key_vault_purge_protection=config.key_vault_purge_protection,
        ),
    )
    on_foundation = OnFoundationArgs(
        names=names, foundation=foundation, tags=tags, subscription_id=client.subscription_id
    )
    identity = WorkloadIdentity("workload-identity", on_foundation)
    workspace = FoundryWorkspace("foundry", on_foundation)
    return Environment(config, names, tags, foundation, identity, workspace)


def build_gpu_cluster(env: Environment, gpu: GpuChoice) -> GpuCluster:
    """The training cluster, in the project where the jobs run, pulling and mounting as the
    workload identity."""
    return GpuCluster(
        GPU_CLUSTER_NAME,
        GpuClusterArgs(
            resource_group_name=env.foundation.resource_group.name,
            workspace_name=env.workspace.project.name,
            location=env.config.location,
            vm_size=gpu.vm_size,
            max_nodes=env.config.max_nodes,
            low_priority=env.config.low_priority,
            idle_seconds_before_scale_down=env.config.idle_seconds_before_scale_down,
            identity_id=env.identity.identity.id,
            tags=env.tags,
            compute_name=GPU_CLUSTER_NAME,
            vcpus_per_node=gpu.vcpus_per_node,
        ),
    )


def stack_outputs(env: Environment) -> dict[str, Any]:
    foundation, workload = env.foundation, env.identity.identity
    return {
        "location": env.config.location,
        "resourceGroupName": foundation.resource_group.name,
        "resourceGroupId": foundation.resource_group.id,
        "storageAccountName": foundation.storage_account.name,
        "keyVaultName": foundation.key_vault.name,
        "registryLoginServer": foundation.container_registry.login_server,
        "hubName": env.workspace.hub.name,
        "hubId": env.workspace.hub.id,
        "projectName": env.workspace.project.name,
        "projectId": env.workspace.project.id,
        "identityId": workload.id,
        "identityClientId": workload.client_id,
        "identityPrincipalId": workload.principal_id,
    }


def build_stack(preflight: Preflight = quota_preflight) -> dict[str, Any]:
    """Everything `pulumi up` creates; returns the stack outputs. Also run offline by plan.py."""
    # Validation first: a bad key or a quota that does not fit must stop the run before any
    # resource is registered.
    config = load_stack_config()
    names = stack_names(config, pulumi.get_project(), pulumi.get_stack())
    gpu = preflight(config, names)
    env = build_environment(config, names)
    cluster = build_gpu_cluster(env, gpu)
    return stack_outputs(env) | {
        "gpuClusterName": cluster.compute.name,
        "gpuVmSize": gpu.vm_size,
        "gpuReservedVcpus": cluster.reserved_vcpus,
    }


def main() -> None:
    try:
        outputs = build_stack()
    except (ConfigError, PreflightFailed, PreflightUnavailable) as error:
        # RunError prints the message alone: the traceback would bury what to do.
        raise pulumi.RunError(str(error)) from None
    for key, value in outputs.items():
        pulumi.export(key, value)
