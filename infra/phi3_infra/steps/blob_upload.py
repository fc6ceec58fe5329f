"""The upload of one training-data file to the stack's storage, as a dynamic step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pulumi.dynamic

from phi3_infra.azure.blob import storage_token, upload_blob
from phi3_infra.line_endings import read_as_sent
from phi3_infra.steps.base import Step


class _BlobUploadProvider(Step):
    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        # The bytes the data hash (and so the blob name and data version) was computed over.
        upload_blob(props["url"], read_as_sent(Path(props["path"])), storage_token)
        return pulumi.dynamic.CreateResult(id_=props["url"], outs=props)

    replaced_by = ("url",)


class BlobUpload(pulumi.dynamic.Resource):
    url: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        url: pulumi.Input[str],
        path: Path,
        sha256: str,
        opts: pulumi.ResourceOptions,
    ) -> None:
        props = {"url": url, "path": str(path), "sha256": sha256}
        super().__init__(_BlobUploadProvider(), name, props, opts)
