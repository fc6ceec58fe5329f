"""The fine-tuning run: an Azure ML command job on serverless compute, and the wait for its end.

Serverless, because compute clusters are not supported in hub projects (MicrosoftDocs/azure-ai-docs
articles/machine-learning/concept-hub-workspace.md, "Supported capabilities by workspace kind");
a command job without `computeId` runs on serverless compute sized by `resources.instanceType` /
`instanceCount`, with `queueSettings.jobTier` Standard or Spot, drawing on the same Azure ML quota
(articles/machine-learning/how-to-use-serverless-compute.md). Nothing exists between jobs, so idle
costs nothing.

The job's name is a hash of everything that decides which run it is (trainer image, data hashes,
base model, trainer flags, the GPU candidate list, the node count and `trainingRun`). The size
actually used is picked once, by the quota preflight, and kept: a re-run finds the job under the
same name and reuses its size (`submitted_job`), so a quota change never retrains. Jobs are
immutable in Azure ML, so a changed input means a new name, which Pulumi turns into a new run.

Two ways to learn the outcome. `waitForTraining: true`: `JobCompletion` blocks `pulumi up` until
the job ends, then the model version is registered. `waitForTraining: false` (submit-and-return,
for CI runners that stop after hours): `pulumi up` submits the job and returns; each later run
reads the job at plan time (same inputs, same name, so never resubmitted) and registers the model
only once Azure says Completed. A job that Failed or was Canceled stops `pulumi up` before any
resource either way (`TrainingFailed`): its name is taken for good, so only new inputs or a new
`trainingRun` train again.

History: a retrain replaces the logical job and model with new Azure names; the old ones are
retained (immutable.py), so every earlier job stays in the studio and every earlier model version
stays servable by `modelReference`. A superseded job still running is cancelled
(`JobCancellation`'s delete). All of it goes with the project at `pulumi destroy` (teardown.py).
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi_azure_native import authorization
from pulumi_azure_native import machinelearningservices as ml

from phi3_infra.azure.api_versions import ML_API_VERSION
from phi3_infra.azure.arm import ArmClient, ArmNotFoundError
from phi3_infra.azure.waiting import (
    JOB_FAILED,
    JOB_SUCCEEDED,
    job_error,
    studio_link,
)
from phi3_infra.components.identity import WORKLOAD_PRINCIPAL
from phi3_infra.components.immutable import asset_version_options, job_options
from phi3_infra.components.rbac import BuiltInRole, assign_role
from phi3_infra.steps.job_completion import JobCompletion
from phi3_infra.steps.teardown import JobCancellation
from phi3_infra.trainer_flags import TrainerArg, command_words

JOB_NAME_PREFIX = "phi3-ft-"
EXPERIMENT_NAME = "phi3-fine-tuning"
TRAINER_ENVIRONMENT = "phi3-trainer"
MODEL_OUTPUT = "model"
MERGED_MODEL = "merged"  # the trainer's folder for the full model (LoRA merged, or full FT)
SHM_SIZE = "16g"
MODEL_VERSION = "1"  # one model name per job: the job's hash is in the name
_HASH_LENGTH = 16


@dataclass(frozen=True)
class TrainingInputs:
    """Everything that decides which training run this is: known before Azure is asked."""

    trainer_image: str  # content tag or pinned reference
    data_sha256: Mapping[str, str]  # input role -> file hash
    base_model: str
    trainer_args: Mapping[str, TrainerArg]
    gpu_candidates: Sequence[str]  # the user's ranked sizes; the preflight picks one
    nodes: int
    run: int = 0  # `trainingRun`: another job on the same inputs

    def fingerprint(self) -> str:
        decisive: dict[str, Any] = {
            "trainer_image": self.trainer_image,
            "data": dict(self.data_sha256),
            "base_model": self.base_model,
            "trainer_args": dict(self.trainer_args),
            "gpu_candidates": list(self.gpu_candidates),
            "nodes": self.nodes,
        }
        # Only when set: run 0 keeps the names of jobs submitted before the key existed.
        if self.run:
            decisive["run"] = self.run
        canonical = json.dumps(decisive, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:_HASH_LENGTH]

    @property
    def job_name(self) -> str:
        return JOB_NAME_PREFIX + self.fingerprint()


@dataclass(frozen=True)
class JobSizing:
    """What the job runs on: one candidate size, its GPUs per node, and the job tier."""

    vm_size: str
    gpus_per_node: int
    low_priority: bool

    @property
    def job_tier(self) -> ml.JobTier:
        # Spot is serverless compute's low-priority tier (how-to-use-serverless-compute.md).
        return ml.JobTier.SPOT if self.low_priority else ml.JobTier.STANDARD


def job_path(subscription_id: str, resource_group: str, workspace: str, job_name: str) -> str:
    return (
        f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}"
        f"/providers/Microsoft.MachineLearningServices/workspaces/{workspace}/jobs/{job_name}"
    )


class TrainingFailed(RuntimeError):
    """The stack's training job ended without a model; the message says how to train again."""


@dataclass(frozen=True)
class SubmittedJob:
    """The stack's training job as Azure has it when the program is planned (Jobs_Get)."""

    name: str
    status: str  # JobStatus (ML REST spec mfe.json): Queued, Running, Completed, Failed, ...
    sizing: JobSizing | None  # None if Azure's answer names no size
    error: str  # Azure's reason, for a job that ended badly
    studio_url: str

    @property
    def completed(self) -> bool:
        return self.status in JOB_SUCCEEDED

    def require_not_failed(self, next_run: int) -> None:
        """Raise TrainingFailed if the job ended badly: nothing under its name can train again;
        `next_run` is the `trainingRun` that would."""
        if self.status in JOB_FAILED:
            raise TrainingFailed(
                f"training job {self.name} {self.status}: {self.error}\n"
                f"logs: {self.studio_url} (Outputs + logs > user_logs/std_log.txt)\n"
                "Nothing was changed. A job runs once under its name, which the training inputs "
                "decide (trainingData, validationData, baseModel, trainerArgs, the trainer image, "
                "gpuSkus, trainingNodes, trainingRun). Fix the cause and change those inputs, or "
                "train again on the same ones with `pulumi config set phi3-foundry:trainingRun "
                f"{next_run}`; then run `pulumi up`."
            )


def submitted_job(client: ArmClient, path: str) -> SubmittedJob | None:
    """The job this stack already submitted under `path`, or None if there is none (nor its
    workspace or resource group yet: ARM answers 404 for each)."""
    try:
        job = client.get_json(path, ML_API_VERSION)
    except ArmNotFoundError:
        return None
    properties = job.get("properties") or {}
    workspace_id, name = path.rsplit("/jobs/", 1)
    return SubmittedJob(
        name=name,
        status=str(properties.get("status") or "Unknown"),
        sizing=_sizing(properties),
        error=job_error(job),
        studio_url=studio_link({"name": name, **job}, workspace_id),
    )


def _sizing(properties: Mapping[str, Any]) -> JobSizing | None:
    resources = properties.get("resources") or {}
    vm_size = resources.get("instanceType")
    if not vm_size:
        return None
    distribution = properties.get("distribution") or {}
    queue = properties.get("queueSettings") or {}
    return JobSizing(
        vm_size=vm_size,
        gpus_per_node=int(distribution.get("processCountPerInstance") or 1),
        low_priority=queue.get("jobTier") == ml.JobTier.SPOT.value,
    )


def registers_model(waits_for_training: bool, job: SubmittedJob | None) -> bool:
    """Whether this run registers the trained model: after its wait, or once Azure says the job
    Completed when it does not wait (module docstring)."""
    return waits_for_training or (job is not None and job.completed)


def _shell_word(word: str) -> str:
    # Azure ML substitutes ${{...}} before the shell runs: leave those unquoted.
    return word if word.startswith("${{") else shlex.quote(word)


def trainer_command(
    data_roles: Sequence[str], base_model: str, trainer_args: Mapping[str, TrainerArg]
) -> str:
    """`python -m phi3_trainer` with the job's inputs and output bound by Azure ML; a list value
    becomes one word per item after its flag (trainer_flags.command_words)."""
    flags: dict[str, TrainerArg] = {"train_file": "${{inputs.train}}"}
    if "validation" in data_roles:
        flags["validation_file"] = "${{inputs.validation}}"
    flags |= {"model_name_or_path": base_model, "output_dir": "${{outputs.model}}"}
    parts = ["python", "-m", "phi3_trainer"]
    for name, value in {**flags, **trainer_args}.items():
        parts += [f"--{name}", *(_shell_word(word) for word in command_words(value))]
    return " ".join(parts)


@dataclass(frozen=True)
class TrainingJobArgs:
    inputs: TrainingInputs
    sizing: JobSizing
    data_assets: Mapping[str, pulumi.Input[str]]  # role -> ARM id of the data version
    trainer_image_ref: pulumi.Input[str]
    resource_group_name: pulumi.Input[str]
    workspace_name: pulumi.Input[str]
    workspace_id: pulumi.Input[str]
    identity_id: pulumi.Input[str]
    identity_client_id: pulumi.Input[str]
    identity_principal_id: pulumi.Input[str]
    # The hub's storage account, where the project's default datastore keeps job outputs.
    storage_account_name: str  # deterministic Azure name, for the role assignment's name
    storage_account_id: pulumi.Input[str]
    subscription_id: pulumi.Input[str]
    tags: Mapping[str, str]
    # What Azure needs in place that data flow does not show (roles, data versions).
    depends_on: Sequence[pulumi.Resource]
    # Register the model: after the wait, or (not waiting) because the job already Completed.
    register_model: bool
    # Wait for the job's end within this bound (`waitForTraining`); None: do not wait.
    wait_timeout_s: int | None


class TrainingJob(pulumi.ComponentResource):
    """Environment, command job, the wait for its end when the stack waits, and the model version
    registered from its output (named after the job) once it can be."""

    job: ml.Job
    output_writer: authorization.RoleAssignment
    completion: JobCompletion | None
    model: ml.ModelVersion | None

    def __init__(
        self, name: str, args: TrainingJobArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("phi3:training:TrainingJob", name, None, opts)
        inputs, sizing = args.inputs, args.sizing
        self.job_name = inputs.job_name
        environment = ml.EnvironmentVersion(
            "trainer-environment",
            name=TRAINER_ENVIRONMENT,
            version=hashlib.sha256(inputs.trainer_image.encode()).hexdigest()[:_HASH_LENGTH],
            resource_group_name=args.resource_group_name,
            workspace_name=args.workspace_name,
            properties=ml.EnvironmentVersionPropertiesArgs(
                image=args.trainer_image_ref,
                os_type=ml.OperatingSystemType.LINUX,
                description="Phi-3 trainer (python -m phi3_trainer)",
                tags=dict(args.tags),
            ),
            opts=asset_version_options(self),
        )
        # The job reaches storage as its own identity (datastores are identity-based, shared
        # keys are off) and rw-mounts `outputs.model` on the default datastore: writing needs
        # Storage Blob Data Contributor, not the Reader the infra stage grants. Sources:
        # learn.microsoft.com/azure/machine-learning/how-to-administrate-data-authentication
        # ("Does this user have permission for writing?"; in SDK v2 a job's data access uses
        # the job's identity) and learn.microsoft.com/azure/ai-foundry/how-to/disable-local-auth
        # ("Scenarios for hub storage account role assignments": fine-tuning, user-assigned
        # managed identity, Storage Blob Data Contributor). The account, not the datastore's
        # container: Azure names that container when it creates the project, so it is unknown
        # at plan time. Only stacks that train get this grant.
        self.output_writer = assign_role(
            scope_name=args.storage_account_name,
            scope_id=args.storage_account_id,
            role=BuiltInRole.STORAGE_BLOB_DATA_CONTRIBUTOR,
            principal_role=WORKLOAD_PRINCIPAL,
            principal_id=args.identity_principal_id,
            subscription_id=args.subscription_id,
            parent=self,
        )
        distributed = inputs.nodes > 1 or sizing.gpus_per_node > 1
        self.job = ml.Job(
            "training-job",
            id=self.job_name,
            resource_group_name=args.resource_group_name,
            workspace_name=args.workspace_name,
            properties=ml.CommandJobArgs(
                job_type="Command",
                display_name=f"Phi-3 fine-tuning {self.job_name}",
                experiment_name=EXPERIMENT_NAME,
                command=trainer_command(
                    list(args.data_assets), inputs.base_model, inputs.trainer_args
                ),
                environment_id=environment.id,
                # No compute_id: the job runs on serverless compute (module docstring).
                identity=ml.ManagedIdentityArgs(
                    identity_type="Managed",
                    client_id=args.identity_client_id,
                    resource_id=args.identity_id,
                ),
                inputs={
                    role: ml.UriFileJobInputArgs(
                        job_input_type="uri_file",
                        uri=asset,
                        mode=ml.InputDeliveryMode.READ_ONLY_MOUNT,
                    )
                    for role, asset in args.data_assets.items()
                },
                outputs={
                    MODEL_OUTPUT: ml.UriFolderJobOutputArgs(
                        job_output_type="uri_folder", mode=ml.OutputDeliveryMode.READ_WRITE_MOUNT
                    )
                },
                # NCCL and data-loader workers share memory through /dev/shm; Azure's 2g default
                # is small for several GPUs.
                resources=ml.JobResourceConfigurationArgs(
                    instance_type=sizing.vm_size, instance_count=inputs.nodes, shm_size=SHM_SIZE
                ),
                queue_settings=ml.QueueSettingsArgs(job_tier=sizing.job_tier),
                distribution=(
                    ml.PyTorchArgs(
                        distribution_type="PyTorch",
                        process_count_per_instance=sizing.gpus_per_node,
                    )
                    if distributed
                    else None
                ),
                # Azure ML sets MLFLOW_TRACKING_URI, which turns the trainer's MLflow logging on;
                # its MLflow store rejects runs that log too many parameters.
                environment_variables={"MLFLOW_MAX_LOG_PARAMS": "100"},
                # No content tag (the name is the fingerprint): immutable.py says why.
                tags=dict(args.tags),
            ),
            # Jobs are immutable: never updated, and kept in Azure when replaced (history).
            opts=job_options(self, [*args.depends_on, self.output_writer]),
        )
        # Deleted before the job (it depends on it): `pulumi destroy` stops a running job and
        # waits for it to end before the job and its workspace go.
        self.cancellation = JobCancellation(
            "training-job-cancellation",
            job_id=self.job.id,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.job]),
        )
        self.completion, self.model = None, None
        if args.wait_timeout_s is not None:
            self.completion = JobCompletion(
                "training-job-completion",
                job_id=self.job.id,
                workspace_id=args.workspace_id,
                timeout_s=args.wait_timeout_s,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.job]),
            )
        if args.register_model:
            # The merged model the trainer writes (weights and tokenizer): servable without the
            # base model, which the offline server image could not download. After the wait, or
            # after the job when Azure already reported it Completed.
            self.model = ml.ModelVersion(
                "model",
                name=self.job_name,
                version=MODEL_VERSION,
                resource_group_name=args.resource_group_name,
                workspace_name=args.workspace_name,
                properties=ml.ModelVersionPropertiesArgs(
                    model_type="custom_model",
                    model_uri=(
                        f"azureml://jobs/{self.job_name}/outputs/{MODEL_OUTPUT}/paths/{MERGED_MODEL}/"
                    ),
                    job_name=self.job_name,
                    description=f"Phi-3 fine-tuned by job {self.job_name} from {inputs.base_model}",
                    tags=dict(args.tags),
                ),
                opts=asset_version_options(self, [self.completion or self.job]),
            )
        self.register_outputs({"jobName": self.job_name, "jobId": self.job.id})

    @property
    def model_reference(self) -> str:
        """What `modelReference` takes to serve this job's model (registered or not yet)."""
        return f"azureml:{self.job_name}:{MODEL_VERSION}"
