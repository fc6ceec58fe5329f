"""The Pulumi program: validate the configuration, then build one region's environment."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pulumi
from pulumi_azure_native import authorization

from phi3_infra.azure.arm import ArmError, client_from_environment
from phi3_infra.azure.model_choice import live_model
from phi3_infra.azure.preflight import (
    PreflightFailed,
    PreflightRequest,
    PreflightUnavailable,
    ServingRequest,
    require_fit,
)
from phi3_infra.azure.registry_build import RegistryToken, exchange_acr_refresh_token
from phi3_infra.azure.waiting import studio_run_url
from phi3_infra.build_context import ImageContextError, ImageSource, image_sources
from phi3_infra.catalog.vm_sizes import known_gpus_per_node
from phi3_infra.components.data import TrainingData, TrainingDataArgs
from phi3_infra.components.foundation import Foundation, FoundationArgs
from phi3_infra.components.identity import (
    ENDPOINT_PRINCIPAL,
    WORKLOAD_PRINCIPAL,
    EndpointIdentity,
    IdentityArgs,
    WorkloadIdentity,
    endpoint_grants,
    workload_grants,
)
from phi3_infra.components.images import ContainerImages, ImagesArgs
from phi3_infra.components.rbac import Deployer
from phi3_infra.components.serving import (
    EndpointSettings,
    ServedModel,
    ServingArgs,
    ServingEndpoint,
    deployment_name,
    server_environment_version,
)
from phi3_infra.components.training import (
    MODEL_VERSION,
    JobSizing,
    SubmittedJob,
    TrainingFailed,
    TrainingInputs,
    TrainingJob,
    TrainingJobArgs,
    job_path,
    registers_model,
    submitted_job,
)
from phi3_infra.components.workspace import FoundryWorkspace, WorkspaceArgs
from phi3_infra.config import ConfigError, StackConfig, Stage, load_stack_config
from phi3_infra.fit import check_training_fits
from phi3_infra.naming import StackNames, stack_names
from phi3_infra.tags import stack_tags
from phi3_infra.training_data import DataError, DataFile, validate_data

SKIPPED_PREFLIGHT_WARNING = (
    "skipPreflight is set: VM size, training and serving quota, resource-provider, name "
    "availability and soft-deleted-name checks are skipped, so a missing quota or a taken name "
    "fails late, after other resources exist."
)


@dataclass(frozen=True)
class GpuChoice:
    """The VM size training runs on, and whether a preflight against Azure chose it."""

    vm_size: str
    vcpus_per_node: int | None
    checked: bool
    gpus_per_node: int | None = None  # from Azure's vmSizes answer when checked

    @property
    def gpus(self) -> int:
        """GPUs per node for the job's process count: Azure's figure, else the known table;
        an unknown size runs one process per node."""
        return self.gpus_per_node or known_gpus_per_node(self.vm_size)


# (checked inputs, the size the stack's existing training job ran on if any, the model this run
# serves if any) -> training size
Preflight = Callable[["Validated", str | None, ServedModel | None], GpuChoice]


def preflight_request(
    checked: Validated, fixed_sku: str | None, model: ServedModel | None
) -> PreflightRequest:
    """What the stack will ask Azure for, by stage: training quota only when it trains (and none
    for a size it already trained on), serving quota only when it serves; names and providers
    always."""
    config, names, subscription_id = checked.config, checked.names, checked.subscription_id
    trains = config.uses(Stage.TRAIN)
    serving = None
    if config.uses(Stage.SERVE) and model is not None:
        # The deployment this run serves from: a new model's is new, next to the live one.
        environment = server_environment_version(checked.images["server"].identity)
        deployment_id = (
            f"{_project_path(checked)}/onlineEndpoints/{names.online_endpoint}"
            f"/deployments/{deployment_name(model, environment)}"
        )
        serving = ServingRequest(
            config.serving_instance_type, config.serving_instance_count, deployment_id
        )
    return PreflightRequest(
        subscription_id=subscription_id,
        regions=(config.location,),
        skus=config.gpu_skus if trains else (),
        training_nodes=config.training_nodes,
        low_priority=config.low_priority,
        fixed_sku=fixed_sku if trains else None,
        serving=serving,
        key_vault_names=(names.key_vault,),
        workspace_names=(names.hub, names.project),
        unique_names=names.globally_unique(),
        resource_group=names.resource_group,
    )


def quota_preflight(
    checked: Validated, fixed_sku: str | None, model: ServedModel | None
) -> GpuChoice:
    """Ask Azure, before any resource exists, whether the stack fits (names, providers, training
    and serving quota) and which training size it gets; raise if anything does not fit."""
    config = checked.config
    unchecked = GpuChoice(fixed_sku or config.gpu_skus[0], None, checked=False)
    if config.skip_preflight:
        pulumi.log.warn(SKIPPED_PREFLIGHT_WARNING)
        return unchecked
    try:
        client = client_from_environment()
    except ArmError as error:  # sign-in settings incomplete (credentials.py names the variable)
        raise PreflightUnavailable(f"Preflight could not sign in to Azure: {error}") from None
    with client:
        report = require_fit(client, preflight_request(checked, fixed_sku, model))
    for warning in report.warnings:
        pulumi.log.warn(warning)
    chosen = report.regions[0].chosen
    if chosen is None:  # the stack trains nothing: the first candidate stands for it, unchecked
        return unchecked
    return GpuChoice(chosen.sku, chosen.vcpus_per_node or None, True, chosen.gpus_per_node or None)


# checked inputs -> the stack's training job if Azure already has it
TrainingLookup = Callable[["Validated"], SubmittedJob | None]
# checked inputs -> the model the stack's endpoint serves now, if any
ServedLookup = Callable[["Validated"], ServedModel | None]


def _project_path(checked: Validated) -> str:
    names = checked.names
    return (
        f"/subscriptions/{checked.subscription_id}/resourceGroups/{names.resource_group}"
        f"/providers/Microsoft.MachineLearningServices/workspaces/{names.project}"
    )


def _lookup_failed(what: str, checked: Validated, error: ArmError) -> PreflightUnavailable:
    return PreflightUnavailable(
        f"could not look up {what} in project {checked.names.project} "
        f"({type(error).__name__}): {error}. Sign in with `az login` (or set the service "
        "principal variables) and make sure you can read the resource group."
    )


def existing_training(checked: Validated) -> SubmittedJob | None:
    """This stack's training job as Azure has it, looked up by its name (known from the inputs
    alone): on a re-run its size and tier stay, so a quota change or `skipPreflight` never
    re-picks the size, which would replace the job and retrain; and its status says whether its
    model can be registered (training.py). Asked even with the preflight skipped: it reads the
    project, not quotas."""
    if not checked.config.uses(Stage.TRAIN):
        return None
    names = checked.names
    job_name = training_inputs(checked).job_name
    path = job_path(checked.subscription_id, names.resource_group, names.project, job_name)
    try:
        with client_from_environment() as client:
            return submitted_job(client, path)
    except ArmError as error:
        raise _lookup_failed(
            f"whether training job {job_name} already exists", checked, error
        ) from None


def endpoint_model(checked: Validated) -> ServedModel | None:
    """The model this stack's endpoint serves now (model_choice.py), for a run that registers
    none yet: serving keeps it while the training job runs."""
    endpoint = checked.names.online_endpoint
    path = f"{_project_path(checked)}/onlineEndpoints/{endpoint}"
    try:
        with client_from_environment() as client:
            live = live_model(client, path)
    except ArmError as error:
        raise _lookup_failed(f"which model endpoint {endpoint} serves", checked, error) from None
    return ServedModel(*live) if live is not None else None


def no_existing_training(checked: Validated) -> SubmittedJob | None:
    """For the offline plan: no Azure to ask, so no job exists yet."""
    return None


def nothing_served(checked: Validated) -> ServedModel | None:
    """For the offline plan: no Azure to ask, so no endpoint serves anything yet."""
    return None


def offline_gpu_choice(
    checked: Validated, fixed_sku: str | None, model: ServedModel | None
) -> GpuChoice:
    """For the offline plan: no Azure to ask, so the trained-on size or the first candidate
    stands in, unchecked."""
    return GpuChoice(fixed_sku or checked.config.gpu_skus[0], None, checked=False)


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
    identity = WorkloadIdentity(
        "workload-identity",
        IdentityArgs(
            azure_name=names.identity,
            principal_role=WORKLOAD_PRINCIPAL,
            resource_group_name=foundation.resource_group.name,
            location=foundation.resource_group.location,
            grants=workload_grants(
                resource_group=(names.resource_group, foundation.resource_group.id),
                storage_account=(names.storage_account, foundation.storage_account.id),
                container_registry=(names.container_registry, foundation.container_registry.id),
            ),
            subscription_id=client.subscription_id,
            tags=tags,
        ),
    )
    workspace = FoundryWorkspace(
        "foundry",
        WorkspaceArgs(
            hub_name=names.hub,
            project_name=names.project,
            resource_group_name=foundation.resource_group.name,
            location=foundation.resource_group.location,
            storage_account_id=foundation.storage_account.id,
            key_vault_id=foundation.key_vault.id,
            container_registry_id=foundation.container_registry.id,
            app_insights_id=foundation.app_insights.id,
            job_identity_id=identity.identity.id,
            subscription_id=client.subscription_id,
            tags=tags,
        ),
    )
    return Environment(config, names, tags, foundation, identity, workspace, client)


@dataclass(frozen=True)
class Validated:
    """Everything checked locally before any resource: config, names, data, image contexts."""

    config: StackConfig
    names: StackNames
    data_files: list[DataFile]
    images: dict[str, ImageSource]
    subscription_id: str  # the subscription `pulumi up` deploys to; the names hash it


def check_inputs(config: StackConfig, names: StackNames, subscription_id: str) -> Validated:
    """The data and the image contexts the stages need; raises before any resource exists."""
    wanted = {"train": config.training_data, "validation": config.validation_data}
    data_files = validate_data(wanted) if config.uses(Stage.TRAIN) else []
    return Validated(config, names, data_files, image_sources(config), subscription_id)


def validate_inputs() -> Validated:
    config = load_stack_config()
    # A blocking invoke, not a resource: the global names hash the subscription id, and they are
    # needed before anything is registered.
    subscription_id = authorization.get_client_config().subscription_id
    names = stack_names(config, pulumi.get_project(), pulumi.get_stack(), subscription_id)
    return check_inputs(config, names, subscription_id)


def build_images(
    env: Environment, sources: dict[str, ImageSource], registry_token: RegistryToken
) -> ContainerImages:
    foundation = env.foundation
    return ContainerImages(
        "images",
        ImagesArgs(
            image_build=env.config.image_build,
            sources=sources,
            registry_name=env.names.container_registry,
            registry_id=foundation.container_registry.id,
            login_server=foundation.container_registry.login_server,
            tenant_id=env.client.tenant_id,
            deployer=env.deployer,
            registry_token=registry_token,
        ),
    )


def training_inputs(checked: Validated) -> TrainingInputs:
    """What decides which run this is, hence the job's name (known before Azure is asked)."""
    config = checked.config
    return TrainingInputs(
        trainer_image=checked.images["trainer"].identity,
        data_sha256={file.role: file.sha256 for file in checked.data_files},
        base_model=config.base_model,
        trainer_args=config.trainer_args or {},
        gpu_candidates=config.gpu_skus,
        nodes=config.training_nodes,
        run=config.training_run,
    )


def build_training(
    env: Environment,
    sizing: JobSizing,
    images: ContainerImages,
    checked: Validated,
    job: SubmittedJob | None,
) -> TrainingJob:
    config, foundation, project = env.config, env.foundation, env.workspace.project
    data = TrainingData(
        "training-data",
        TrainingDataArgs(
            files=checked.data_files,
            resource_group_name=foundation.resource_group.name,
            storage_account_name=env.names.storage_account,
            storage_account_id=foundation.storage_account.id,
            blob_endpoint=foundation.storage_account.primary_endpoints.apply(lambda e: e.blob),
            workspace_name=project.name,
            deployer=env.deployer,
            tags=env.tags,
        ),
    )
    return TrainingJob(
        "training",
        TrainingJobArgs(
            inputs=training_inputs(checked),
            sizing=sizing,
            data_assets=data.assets,
            trainer_image_ref=images.refs["trainer"],
            resource_group_name=foundation.resource_group.name,
            workspace_name=project.name,
            workspace_id=project.id,
            identity_id=env.identity.identity.id,
            identity_client_id=env.identity.identity.client_id,
            identity_principal_id=env.identity.identity.principal_id,
            storage_account_name=env.names.storage_account,
            storage_account_id=foundation.storage_account.id,
            subscription_id=env.client.subscription_id,
            tags=env.tags,
            depends_on=[
                *env.identity.role_assignments,
                *data.versions,
                images,
            ],
            register_model=registers_model(config.wait_for_training, job),
            wait_timeout_s=(
                config.training_timeout_minutes * 60 if config.wait_for_training else None
            ),
        ),
    )


def build_endpoint_identity(env: Environment) -> EndpointIdentity:
    """The internet-facing endpoint's own identity: image pull and model read, nothing more."""
    foundation, names = env.foundation, env.names
    return EndpointIdentity(
        "serving-identity",
        IdentityArgs(
            azure_name=names.endpoint_identity,
            principal_role=ENDPOINT_PRINCIPAL,
            resource_group_name=foundation.resource_group.name,
            location=foundation.resource_group.location,
            grants=endpoint_grants(
                storage_account=(names.storage_account, foundation.storage_account.id),
                container_registry=(names.container_registry, foundation.container_registry.id),
            ),
            subscription_id=env.client.subscription_id,
            tags=env.tags,
        ),
    )


def served_model(
    checked: Validated, job: SubmittedJob | None, find_served: ServedLookup
) -> ServedModel | None:
    """The model this run serves, decided before any resource (model_choice.py): modelReference,
    else the trained model when this run registers it, else what the endpoint serves now."""
    config = checked.config
    if not config.uses(Stage.SERVE):
        return None
    reference = config.model_name_and_version()
    if reference is not None:
        return ServedModel(*reference)
    if registers_model(config.wait_for_training, job):
        return ServedModel(training_inputs(checked).job_name, MODEL_VERSION)
    return find_served(checked)


def endpoint_settings(config: StackConfig) -> EndpointSettings:
    return EndpointSettings(
        location=config.location,
        auth_mode=config.endpoint_auth_mode,
        instance_type=config.serving_instance_type,
        instance_count=config.serving_instance_count,
        request_timeout_s=config.request_timeout_seconds,
        max_concurrent_requests=config.max_concurrent_requests,
    )


def build_serving(
    env: Environment,
    images: ContainerImages,
    checked: Validated,
    served: ServedModel | None,
) -> ServingEndpoint:
    config, project = env.config, env.workspace.project
    endpoint_identity = build_endpoint_identity(env)
    return ServingEndpoint(
        "serving",
        ServingArgs(
            settings=endpoint_settings(config),
            endpoint_name=env.names.online_endpoint,
            server_image_identity=checked.images["server"].identity,
            server_image_ref=images.refs["server"],
            model=served,
            project_id=project.id,
            resource_group_name=env.foundation.resource_group.name,
            workspace_name=project.name,
            identity_id=endpoint_identity.identity.id,
            tags=env.tags,
            # The deployment pulls the image and reads the model as the endpoint identity.
            depends_on=[project, *endpoint_identity.role_assignments, images],
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


def report_training(
    checked: Validated, job: SubmittedJob | None, served: ServedModel | None
) -> None:
    """What a `pulumi up` that does not wait leaves to a later one, and what it serves meanwhile."""
    config = checked.config
    if not config.uses(Stage.TRAIN):
        return
    name = training_inputs(checked).job_name
    if served is not None and config.model_reference is not None:
        pulumi.log.info(
            f"serving {served.reference} (phi3-foundry:modelReference); the model of training job "
            f"{name} is served once modelReference is removed"
        )
    if registers_model(config.wait_for_training, job):
        return
    if job is None:
        where = studio_run_url(name, _project_path(checked))
        state = f"submitting training job {name} ({where}) without waiting for it"
    else:
        state = f"training job {name} is {job.status} ({job.studio_url}); no model registered yet"
    later = "run `pulumi up` again once it has completed to register its model"
    if not config.uses(Stage.SERVE) or config.model_reference is not None:
        pulumi.log.info(f"{state}: {later}.")
    elif served is not None:
        pulumi.log.info(
            f"{state}: the endpoint keeps serving {served.reference}; {later} and serve it."
        )
    else:
        pulumi.log.warn(f"{state}: nothing is served yet; {later} and serve it.")


def training_outputs(
    training: TrainingJob, job: SubmittedJob | None, project_id: pulumi.Output[str]
) -> dict[str, Any]:
    """The job, how far it got, and the reference that serves its model (`modelReference`)."""
    outputs: dict[str, Any] = {
        "trainingJobName": training.job_name,
        "trainingJobUrl": project_id.apply(lambda ws: studio_run_url(training.job_name, ws)),
        # After the wait: how it ended. Not waiting: Azure's status as this run found it, or
        # Submitted when this run submits it.
        "trainingStatus": (
            training.completion.status
            if training.completion is not None
            else (job.status if job is not None else "Submitted")
        ),
    }
    if training.model is not None:
        outputs |= {"modelId": training.model.id, "trainedModelReference": training.model_reference}
    return outputs


def build_stack(
    preflight: Preflight = quota_preflight,
    registry_token: RegistryToken = exchange_acr_refresh_token,
    find_training: TrainingLookup = existing_training,
    find_served: ServedLookup = endpoint_model,
) -> dict[str, Any]:
    """Everything `pulumi up` creates; returns the stack outputs. Also run offline by plan.py."""
    # Validation first: a bad key, bad data, a missing Dockerfile, a failed training job or a
    # quota that does not fit must stop the run before any resource is registered.
    checked = validate_inputs()
    config = checked.config
    job = find_training(checked)
    if job is not None:
        job.require_not_failed(next_run=config.training_run + 1)
    served = served_model(checked, job, find_served)
    trained_size = job.sizing if job is not None else None
    gpu = preflight(checked, trained_size.vm_size if trained_size else None, served)
    sizing = trained_size or JobSizing(gpu.vm_size, gpu.gpus, config.low_priority)
    if config.uses(Stage.TRAIN) and job is None:  # a submitted job keeps its size and flags
        for warning in check_training_fits(config, sizing.vm_size, sizing.gpus_per_node):
            pulumi.log.warn(warning)
    report_training(checked, job, served)
    env = build_environment(config, checked.names)
    outputs = stack_outputs(env) | {
        "stages": [stage.value for stage in config.stages],
        "gpuVmSize": gpu.vm_size,  # what training runs (or would run) on: serverless, per job
    }
    if not checked.images:
        return outputs
    images = build_images(env, checked.images, registry_token)
    outputs |= {f"{role}Image": ref for role, ref in images.refs.items()}
    if config.uses(Stage.TRAIN):
        training = build_training(env, sizing, images, checked, job)
        outputs |= training_outputs(training, job, env.workspace.project.id)
        if served is not None and training.model is not None and served.name == training.job_name:
            served = replace(served, depends_on=[training.model])  # deployed once registered
    if config.uses(Stage.SERVE):
        serving = build_serving(env, images, checked, served)
        outputs |= {
            "endpointName": serving.endpoint.name,
            "endpointAuthMode": config.endpoint_auth_mode.value,
            "scoringUri": serving.scoring_uri,
            "openAiBaseUrl": serving.openai_base_url,
            "servedModelReference": served.reference if served is not None else "",
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
        TrainingFailed,
    ) as error:
        # RunError prints the message alone: the traceback would bury what to do.
        raise pulumi.RunError(str(error)) from None
    for key, value in outputs.items():
        pulumi.export(key, value)
