"""Training data: uploaded to the stack's storage and registered as data assets, once
validated (phi3_infra.training_data).

The upload is a dynamic resource speaking the Blob REST API with an Entra ID token: the storage
account has shared keys disabled, and azure-native's `storage.Blob` needs them
(pulumi/pulumi-azure-native#2015: KeyBasedAuthenticationNotPermitted).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
from pulumi_azure_native import machinelearningservices as ml
from pulumi_azure_native import storage

from phi3_infra.components.immutable import asset_version_options
from phi3_infra.components.rbac import BuiltInRole, Deployer, assign_to_deployer
from phi3_infra.steps.blob_upload import BlobUpload
from phi3_infra.training_data import DataFile

DATA_CONTAINER = "training-data"


@dataclass(frozen=True)
class TrainingDataArgs:
    files: list[DataFile]
    resource_group_name: pulumi.Input[str]
    storage_account_name: str  # the deterministic Azure name, for the role assignment's name
    storage_account_id: pulumi.Input[str]
    blob_endpoint: pulumi.Input[str]  # https://<account>.blob.core.windows.net/
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
            # Named from the account's id, so that the container waits for the account.
            account_name=pulumi.Output.from_input(args.storage_account_id).apply(
                lambda _: args.storage_account_name
            ),
            resource_group_name=args.resource_group_name,
            public_access=storage.PublicAccess.NONE,
            opts=child,
        )
        # Whoever runs `pulumi up` writes the data; only this container's account is in scope.
        writer = assign_to_deployer(
            scope_name=args.storage_account_name,
            scope_id=args.storage_account_id,
            role=BuiltInRole.STORAGE_BLOB_DATA_CONTRIBUTOR,
            deployer=args.deployer,
            parent=self,
        )
        self.assets, self.versions = {}, []
        for data in args.files:
            upload = BlobUpload(
                f"{data.role}-data-upload",
                pulumi.Output.concat(args.blob_endpoint, DATA_CONTAINER, "/", data.blob_name),
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
