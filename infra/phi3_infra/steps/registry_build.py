"""An image built in the stack's registry (imageBuild `remote`), as a dynamic step."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi.dynamic

from phi3_infra.azure.arm import Poll, client_from_environment
from phi3_infra.azure.registry_build import BUILD_TIMEOUT_S, run_registry_build
from phi3_infra.steps.base import Step


@dataclass(frozen=True)
class RegistryBuildInputs:
    registry_id: pulumi.Input[str]
    image: str  # repository:tag
    context: str
    reference: pulumi.Input[str]  # login server/repository:tag, what Azure ML pulls
    build_args: dict[str, str]  # the tag names their values: a change is a new image


class _RegistryBuildProvider(Step):
    """Builds in the registry on create; a new tag (new content) replaces the resource."""

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        with client_from_environment() as client:
            run = run_registry_build(
                client,
                props["registry_id"],
                Path(props["context"]),
                props["image"],
                Poll(timeout_s=BUILD_TIMEOUT_S, interval_s=10),
                props["build_args"],
            )
        return pulumi.dynamic.CreateResult(
            id_=props["reference"], outs={**props, "runId": run["properties"]["runId"]}
        )

    replaced_by = ("registry_id", "image")

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Images stay in the registry until the registry goes; nothing billable remains."""


class RegistryBuild(pulumi.dynamic.Resource):
    reference: pulumi.Output[str]

    def __init__(
        self, name: str, inputs: RegistryBuildInputs, opts: pulumi.ResourceOptions
    ) -> None:
        super().__init__(_RegistryBuildProvider(), name, {**vars(inputs), "runId": None}, opts)
