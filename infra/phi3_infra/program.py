"""The Pulumi program: validate the configuration, then build one region's environment."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi_azure_native import authorization

from phi3_infra.arm import client_from_environment
from phi3_infra.compute import KNOWN_GPUS_PER_NODE, GpuCluster, GpuClusterArgs
from phi3_infra.config import ConfigError, StackConfig, Stage, load_stack_config
from phi3_infra.data import DataError, DataFile, TrainingData, TrainingDataArgs, validate_data
from phi3_infra.foundation import Foundation, FoundationArgs, OnFoundationArgs
from phi3_infra.identity import WorkloadIdentity
from phi3_infra.images import (
    ContainerImages,
    ImageContextError,
    ImagesArgs,
    ImageSource,
    RegistryToken,
    exchange_acr_refresh_token,
    image_sources,
)
from phi3_infra.naming import StackNames, stack_names
from phi3_infra.preflight import (
    PreflightFailed,
    PreflightRequest,
    PreflightUnavailable,
    require_gpu_sku,
)
from phi3_infra.rbac import Deployer
from phi3_infra.serving import ServingArgs, ServingEndpoint
from phi3_infra.tags import stack_tags
from phi3_infra.training import TrainingInputs, TrainingJob, TrainingJobArgs
from phi3_infra.waiting import studio_run_url
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
    gpus_per_node: int | None = None  # from Azure's vmSizes answer when checked

    @property
    def gpus(self) -> int:
        """GPUs per node for the job's process count: Azure's figure, else the known table;
        an unknown size runs one process per node."""
        return self.gpus_per_node or KNOWN_GPUS_PER_NODE.get(self.vm_size, 1)


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
    return GpuChoice(chosen.sku, chosen.vcpus_per_node, True, chosen.gpus_per_node)


def offline_gpu_choice(config: StackConfig, names: StackNames) -> GpuChoice:
    """For the offline plan: no Azure to ask, so the first candidate stands in, unchecked."""
    return GpuChoice(config.gpu_skus[0], None, checked=False)


def offline_registry_token(login_server: str, tenant_id: str) -> str:
    """For the offline plan: no registry to sign in to; the value never leaves the mocks."""
    return f"offline-plan-token-for-{login_server}"


@dataclass(frozen=True)
class Environment:
    config: StackConfig
    names: StackNames
    tags: dict[str, str]
    foundation: Foundation
    identity: WorkloadIdentity
    workspace: FoundryWorkspace
    client: pulumi.Output[authorization.GetClientConfigResult]

    @property
    def deployer(self) -> Deployer:
        return Deployer(
            object_id=self.client.object_id,
            principal_type=authorization.PrincipalType(self.config.deployer_principal_type.value),
            subscription_id=self.client.subscription_id,
        )


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
            subscription_id=client.subscription_id,
            key_vault_purge_protection=config.key_vault_purge_protection,
        ),
    )
    on_foundation = OnFoundationArgs(
        names=names, foundation=foundation, tags=tags, subscription_id=client.subscription_id
    )
    identity = WorkloadIdentity("workload-identity", on_foundation)
    workspace = FoundryWorkspace("foundry", on_foundation)
    return Environment(config, names, tags, foundation, identity, workspace, client)


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
            depends_on=env.identity.role_assignments,
        ),
    )


@dataclass(frozen=True)
class Validated:
    """Everything checked locally before any resource: config, names, data, image contexts."""

    config: StackConfig
    names: StackNames
    data_files: list[DataFile]
    images: dict[str, ImageSource]


def check_inputs(config: StackConfig, names: StackNames) -> Validated:
    """The data and the image contexts the stages need; raises before any resource exists."""
    data_files = validate_data(config) if config.uses(Stage.TRAIN) else []
    return Validated(config, names, data_files, image_sources(config))


def validate_inputs() -> Validated:
    config = load_stack_config()
    return check_inputs(config, stack_names(config, pulumi.get_project(), pulumi.get_stack()))


def build_images(
    env: Environment, sources: dict[str, ImageSource], registry_token: RegistryToken
) -> ContainerImages:
    foundation = env.foundation
    return ContainerImages(
        "images",
        ImagesArgs(
            config=env.config,
            sources=sources,
            registry_name=env.names.container_registry,
            registry_id=foundation.container_registry.id,
            login_server=foundation.container_registry.login_server,
            tenant_id=env.client.tenant_id,
            deployer=env.deployer,
            registry_token=registry_token,
        ),
    )


def training_inputs(checked: Validated, gpu: GpuChoice) -> TrainingInputs:
    """What decides the trained model, hence the job's name (known before any resource)."""
    config = checked.config
    return TrainingInputs(
        trainer_image=checked.images["trainer"].identity,
        data_sha256={file.role: file.sha256 for file in checked.data_files},
        base_model=config.base_model,
        trainer_args=config.trainer_args or {},
        vm_size=gpu.vm_size,
        nodes=config.max_nodes,
        gpus_per_node=gpu.gpus,
    )


def build_training(
    env: Environment,
    gpu: GpuChoice,
    cluster: GpuCluster,
    images: ContainerImages,
    checked: Validated,
) -> TrainingJob:
    config, foundation, project = env.config, env.foundation, env.workspace.project
    data = TrainingData(
        "training-data",
        TrainingDataArgs(
            files=checked.data_files,
            resource_group_name=foundation.resource_group.name,
            storage_account=foundation.storage_account,
            storage_account_name=env.names.storage_account,
            workspace_name=project.name,
            deployer=env.deployer,
            tags=env.tags,
        ),
    )
    inputs = training_inputs(checked, gpu)
    return TrainingJob(
        "training",
        TrainingJobArgs(
            config=config,
            inputs=inputs,
            data_files=checked.data_files,
            data_assets=data.assets,
            trainer_image_ref=images.refs["trainer"],
            resource_group_name=foundation.resource_group.name,
            workspace_name=project.name,
            workspace_id=project.id,
            compute_id=cluster.compute.id,
            identity_id=env.identity.identity.id,
            identity_client_id=env.identity.identity.client_id,
            identity_principal_id=env.identity.identity.principal_id,
            storage_account_name=env.names.storage_account,
            storage_account_id=foundation.storage_account.id,
            subscription_id=env.client.subscription_id,
            tags=env.tags,
            depends_on=[
                *env.identity.role_assignments,
                *env.workspace.role_assignments,
                *data.versions,
                images,
            ],
        ),
    )


def build_serving(
    env: Environment,
    images: ContainerImages,
    checked: Validated,
    training: TrainingJob | None,
) -> ServingEndpoint:
    config, project = env.config, env.workspace.project
    if training is not None and training.model is not None:
        model_id: pulumi.Input[str] = training.model.id
        model_dependencies: list[pulumi.Resource] = [training.model]
    else:
        reference = config.model_name_and_version()
        assert reference is not None  # the config rules require it when 'train' is off
        name, version = reference
        model_id = pulumi.Output.concat(project.id, f"/models/{name}/versions/{version}")
        model_dependencies = [project]
    return ServingEndpoint(
        "serving",
        ServingArgs(
            config=config,
            endpoint_name=env.names.online_endpoint,
            server_image_identity=checked.images["server"].identity,
            server_image_ref=images.refs["server"],
            model_id=model_id,
            resource_group_name=env.foundation.resource_group.name,
            workspace_name=project.name,
            identity_id=env.identity.identity.id,
            tags=env.tags,
            depends_on=[*model_dependencies, *env.identity.role_assignments, images],
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


def build_stack(
    preflight: Preflight = quota_preflight,
    registry_token: RegistryToken = exchange_acr_refresh_token,
) -> dict[str, Any]:
    """Everything `pulumi up` creates; returns the stack outputs. Also run offline by plan.py."""
    # Validation first: a bad key, bad data, a missing Dockerfile or a quota that does not fit
    # must stop the run before any resource is registered.
    checked = validate_inputs()
    config = checked.config
    gpu = preflight(config, checked.names)
    env = build_environment(config, checked.names)
    cluster = build_gpu_cluster(env, gpu)
    outputs = stack_outputs(env) | {
        "stages": [stage.value for stage in config.stages],
        "gpuClusterName": cluster.compute.name,
        "gpuVmSize": gpu.vm_size,
        "gpuReservedVcpus": cluster.reserved_vcpus,
    }
    if not checked.images:
        return outputs
    images = build_images(env, checked.images, registry_token)
    outputs |= {f"{role}Image": ref for role, ref in images.refs.items()}
    training = None
    if config.uses(Stage.TRAIN):
        training = build_training(env, gpu, cluster, images, checked)
        outputs["trainingJobName"] = training.job_name
        outputs["trainingJobUrl"] = env.workspace.project.id.apply(
            lambda workspace_id: studio_run_url(training.job_name, workspace_id)
        )
        if training.model is not None:
            outputs["modelId"] = training.model.id
    if config.uses(Stage.SERVE):
        serving = build_serving(env, images, checked, training)
        outputs |= {
            "endpointName": serving.endpoint.name,
            "endpointAuthMode": config.endpoint_auth_mode.value,
            "scoringUri": serving.scoring_uri,
            "openAiBaseUrl": serving.openai_base_url,
        }
        if serving.primary_key is not None:
            outputs |= {"primaryKey": serving.primary_key, "secondaryKey": serving.secondary_key}
    return outputs


def main() -> None:
    try:
        outputs = build_stack()
    except (
        ConfigError,
        DataError,
        ImageContextError,
        PreflightFailed,
        PreflightUnavailable,
    ) as error:
        # RunError prints the message alone: the traceback would bury what to do.
        raise pulumi.RunError(str(error)) from None
    for key, value in outputs.items():
        pulumi.export(key, value)
