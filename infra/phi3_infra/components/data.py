"""Training data: validated locally, uploaded to the stack's storage, registered as data assets.

Validation uses the trainer's own stdlib-only validator, before any resource is registered, so a
bad line fails `pulumi up` with `file:line: what` instead of a GPU job failing minutes later.

The upload is a dynamic resource speaking the Blob REST API with an Entra ID token: the storage
account has shared keys disabled, and azure-native's `storage.Blob` needs them
(pulumi/pulumi-azure-native#2015: KeyBasedAuthenticationNotPermitted).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi.dynamic
from pulumi_azure_native import machinelearningservices as ml
from pulumi_azure_native import storage

from phi3_infra.components.immutable import asset_version_options
from phi3_infra.components.rbac import BuiltInRole, Deployer, assign_to_deployer
from phi3_infra.config import StackConfig
from phi3_infra.line_endings import read_as_sent
from phi3_infra.paths import project_path
from phi3_infra.steps.blob_upload import BlobUpload
from phi3_training_rules.data_validation import validate_chat_jsonl

DATA_CONTAINER = "training-data"
_MAX_PROBLEMS_SHOWN = 20


class DataError(ValueError):
    """Training or validation data is missing or invalid; lists `file:line: what` problems."""


@dataclass(frozen=True)
class DataFile:
    role: str  # "train" or "validation": the trainer input it feeds
    path: Path
    sha256: str  # of the bytes uploaded (LF line endings), not of the file on disk
    records: int

    @property
    def asset_name(self) -> str:
        return f"phi3-{self.role}"

    @property
    def asset_version(self) -> str:
        return self.sha256[:16]

    @property
    def blob_name(self) -> str:
        # Content-addressed, and nothing else: changed data is a new blob and a new asset
        # version, a renamed or moved file with the same bytes is neither.
        return f"{self.role}/{self.sha256}.jsonl"


def validate_data(config: StackConfig) -> list[DataFile]:
    """Validate the configured JSONL files; raise one DataError listing every problem."""
    wanted = [("train", config.training_data), ("validation", config.validation_data)]
    files, problems = [], []
    for role, configured in wanted:
        if configured is None:
            continue
        path = project_path(configured)
        report = validate_chat_jsonl(path)
        problems += [str(problem) for problem in report.problems]
        if report.ok and not report.records:
            problems.append(f"{path}:0: no records")
        if report.ok and report.records:
            sent = hashlib.sha256(read_as_sent(path)).hexdigest()
            files.append(DataFile(role, path, sent, len(report.records)))
    if problems:
        shown = problems[:_MAX_PROBLEMS_SHOWN]
        if len(problems) > len(shown):
            shown.append(f"... and {len(problems) - len(shown)} more")
        raise DataError(
            f"{len(problems)} problem(s) in the training data; nothing was uploaded:\n  "
            + "\n  ".join(shown)
        )
    return files


@dataclass(frozen=True)
class TrainingDataArgs:
    files: list[DataFile]
    resource_group_name: pulumi.Input[str]
    storage_account: storage.StorageAccount
    storage_account_name: str  # the deterministic Azure name, for the role assignment's name
    workspace_name: pulumi.Input[str]
    deployer: Deployer
    tags: Mapping[str, str]


class TrainingData(pulumi.ComponentResource):
    """`assets[role]` is the ARM id of the data version a job input takes."""

    assets: dict[str, pulumi.Output[str]]
    versions: list[ml.DataVersion]

    def __init__(
        self, name: str, args: TrainingDataArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("phi3:data:TrainingData", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        container = storage.BlobContainer(
            "data-container",
            container_name=DATA_CONTAINER,
            account_name=args.storage_account.name,
            resource_group_name=args.resource_group_name,
            public_access=storage.PublicAccess.NONE,
            opts=child,
        )
        # Whoever runs `pulumi up` writes the data; only this container's account is in scope.
        writer = assign_to_deployer(
            scope_name=args.storage_account_name,
            scope_id=args.storage_account.id,
            role=BuiltInRole.STORAGE_BLOB_DATA_CONTRIBUTOR,
            deployer=args.deployer,
            parent=self,
        )
        blob_endpoint = args.storage_account.primary_endpoints.apply(lambda e: e.blob)
        self.assets, self.versions = {}, []
        for data in args.files:
            upload = BlobUpload(
                f"{data.role}-data-upload",
                pulumi.Output.concat(blob_endpoint, DATA_CONTAINER, "/", data.blob_name),
                data.path,
                data.sha256,
                # Kept when new data replaces it: the data version that points at this blob is
                # kept too (immutable.py); both go with the storage account and the project.
                pulumi.ResourceOptions(
                    parent=self, depends_on=[container, writer], retain_on_delete=True
                ),
            )
            version = ml.DataVersion(
                f"{data.role}-data",
                name=data.asset_name,
                version=data.asset_version,
                resource_group_name=args.resource_group_name,
                workspace_name=args.workspace_name,
                properties=ml.UriFileDataVersionArgs(
                    data_type="uri_file",
                    data_uri=upload.url,
                    # Content only (a version's data cannot change, immutable.py): the same
                    # bytes under another file name are the same version, unchanged.
                    description=f"{data.records} chat records, sha256 {data.sha256}",
                    tags=dict(args.tags),
                ),
                opts=asset_version_options(self),
            )
            self.versions.append(version)
            # A job input names the data version by its ARM id: the SDK resolves the
            # `azureml:<name>:<version>` short form to that id before it calls ARM
            # (azure-ai-ml `_job_operations.py` / `_operation_orchestrator.py`).
            self.assets[data.role] = version.id
        self.register_outputs(dict(self.assets))
