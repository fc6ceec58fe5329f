"""The Pulumi program: validate the configuration, then build one region's environment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi_azure_native import authorization

from phi3_infra.config import StackConfig, load_stack_config
from phi3_infra.foundation import Foundation, FoundationArgs, OnFoundationArgs
from phi3_infra.identity import WorkloadIdentity
from phi3_infra.naming import StackNames, stack_names
from phi3_infra.tags import stack_tags
from phi3_infra.workspace import FoundryWorkspace


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


def build_stack() -> dict[str, Any]:
    """Everything `pulumi up` creates; returns the stack outputs. Also run offline by plan.py."""
    # Validation first: a bad key must fail before any resource is registered.
    config = load_stack_config()
    names = stack_names(config, pulumi.get_project(), pulumi.get_stack())
    # Quota and soft-deleted-name preflight goes here (unless config.skip_preflight), before the
    # first resource: it needs only `config` and `names`.
    env = build_environment(config, names)
    # The GPU AmlCompute cluster goes here, once the workspace exists: it needs
    # env.workspace.project (or hub), env.identity.identity, env.tags and config.gpu_skus etc.
    return stack_outputs(env)


def main() -> None:
    for key, value in build_stack().items():
        pulumi.export(key, value)
