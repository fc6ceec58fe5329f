"""The fine-tuning run: an Azure ML command job on the GPU cluster, and the wait for its end.

The job's name is a hash of everything that decides its result (trainer image, data hashes, base
model, trainer flags, VM size, node and GPU counts). Jobs are immutable in Azure ML, so a changed
input means a new name, which Pulumi turns into a new run; an unchanged `pulumi up` finds the same
name and trains nothing.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi.dynamic
from pulumi_azure_native import authorization
from pulumi_azure_native import machinelearningservices as ml

from phi3_infra.arm import client_from_environment
from phi3_infra.config import StackConfig, TrainerArg
from phi3_infra.data import DataFile
from phi3_infra.dynamic import replace_when_changed
from phi3_infra.identity import WORKLOAD_PRINCIPAL
from phi3_infra.rbac import BuiltInRole, assign_role
from phi3_infra.waiting import Poll, wait_for_job

JOB_NAME_PREFIX = "phi3-ft-"
EXPERIMENT_NAME = "phi3-fine-tuning"
TRAINER_ENVIRONMENT = "phi3-trainer"
MODEL_OUTPUT = "model"
MERGED_MODEL = "merged"  # the trainer's folder for the full model (LoRA merged, or full FT)
SHM_SIZE = "16g"
MODEL_VERSION = "1"  # one model name per job: the job's hash is in the name
_HASH_LENGTH = 16
_POLL_INTERVAL_S = 60


@dataclass(frozen=True)
class TrainingInputs:
    """Everything that decides what a training run produces."""

    trainer_image: str  # content tag or pinned reference
    data_sha256: Mapping[str, str]  # input role -> file hash
    base_model: str
    trainer_args: Mapping[str, TrainerArg]
    vm_size: str
    nodes: int
    gpus_per_node: int

    def fingerprint(self) -> str:
        canonical = json.dumps(
            {
                "trainer_image": self.trainer_image,
                "data": dict(self.data_sha256),
                "base_model": self.base_model,
                "trainer_args": dict(self.trainer_args),
                "vm_size": self.vm_size,
                "nodes": self.nodes,
                "gpus_per_node": self.gpus_per_node,
            },
            sort_keys=True,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:_HASH_LENGTH]

    @property
    def job_name(self) -> str:
        return JOB_NAME_PREFIX + self.fingerprint()


def _flag_value(value: TrainerArg) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def trainer_command(
    data_roles: Sequence[str], base_model: str, trainer_args: Mapping[str, TrainerArg]
) -> str:
    """`python -m phi3_trainer` with the job's inputs and output bound by Azure ML."""
    flags = {"train_file": "${{inputs.train}}"}
    if "validation" in data_roles:
        flags["validation_file"] = "${{inputs.validation}}"
    flags |= {"model_name_or_path": base_model, "output_dir": "${{outputs.model}}"}
    parts = ["python", "-m", "phi3_trainer"]
    for name, value in {**flags, **{k: _flag_value(v) for k, v in trainer_args.items()}}.items():
        # Azure ML substitutes ${{...}} before the shell runs: leave those unquoted.
        parts += [f"--{name}", value if value.startswith("${{") else shlex.quote(value)]
    return " ".join(parts)


@dataclass(frozen=True)
class TrainingJobArgs:
    config: StackConfig
    inputs: TrainingInputs
    data_files: list[DataFile]
    data_assets: Mapping[str, pulumi.Input[str]]  # role -> azureml:<name>:<version>
    trainer_image_ref: pulumi.Input[str]
    resource_group_name: pulumi.Input[str]
    workspace_name: pulumi.Input[str]
    workspace_id: pulumi.Input[str]
    compute_id: pulumi.Input[str]
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


class TrainingJob(pulumi.ComponentResource):
    """Environment, command job and, unless fire-and-forget, the wait for its completion and
    the model version registered from its output (named after the job)."""

    job: ml.Job
    output_writer: authorization.RoleAssignment
    completion: JobCompletion | None
    model: ml.ModelVersion | None

    def __init__(
        self, name: str, args: TrainingJobArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("phi3:training:TrainingJob", name, None, opts)
        config, inputs = args.config, args.inputs
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
            opts=pulumi.ResourceOptions(parent=self),
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
        distributed = inputs.nodes > 1 or inputs.gpus_per_node > 1
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
                    [data.role for data in args.data_files], inputs.base_model, inputs.trainer_args
                ),
                environment_id=environment.id,
                compute_id=args.compute_id,
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
                    instance_count=inputs.nodes, shm_size=SHM_SIZE
                ),
                distribution=(
                    ml.PyTorchArgs(
                        distribution_type="PyTorch",
                        process_count_per_instance=inputs.gpus_per_node,
                    )
                    if distributed
                    else None
                ),
                # Azure ML sets MLFLOW_TRACKING_URI, which turns the trainer's MLflow logging on;
                # its MLflow store rejects runs that log too many parameters.
                environment_variables={"MLFLOW_MAX_LOG_PARAMS": "100"},
                tags={**args.tags, "fingerprint": inputs.fingerprint()},
            ),
            # Jobs are immutable: a forced re-run of the same name (`pulumi up --replace`) must
            # delete the old one first.
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[*args.depends_on, self.output_writer],
                delete_before_replace=True,
            ),
        )
        self.completion, self.model = None, None
        if config.wait_for_training:
            self.completion = JobCompletion(
                "training-job-completion",
                job_id=self.job.id,
                workspace_id=args.workspace_id,
                timeout_s=config.training_timeout_minutes * 60,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.job]),
            )
            # The merged model the trainer writes (weights and tokenizer): servable without the
            # base model, which the offline server image could not download.
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
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.completion]),
            )
        self.register_outputs({"jobName": self.job_name, "jobId": self.job.id})


class _JobCompletionProvider(pulumi.dynamic.ResourceProvider):
    """Blocks `pulumi up` until the job completes; fails with the job's error and log link."""

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        with client_from_environment() as client:
            job = wait_for_job(
                client,
                props["job_id"],
                props["workspace_id"],
                Poll(timeout_s=float(props["timeout_s"]), interval_s=_POLL_INTERVAL_S),
            )
        return pulumi.dynamic.CreateResult(
            id_=props["job_id"], outs={**props, "status": job["properties"]["status"]}
        )

    def diff(
        self, _id: str, olds: dict[str, Any], news: dict[str, Any]
    ) -> pulumi.dynamic.DiffResult:
        # A new job is a new wait; a changed timeout alone does not re-wait a finished job.
        return replace_when_changed(olds, news, ("job_id",))


class JobCompletion(pulumi.dynamic.Resource):
    status: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        job_id: pulumi.Input[str],
        workspace_id: pulumi.Input[str],
        timeout_s: int,
        opts: pulumi.ResourceOptions,
    ) -> None:
        props = {
            "job_id": job_id,
            "workspace_id": workspace_id,
            "timeout_s": timeout_s,
            "status": None,
        }
        super().__init__(_JobCompletionProvider(), name, props, opts)
