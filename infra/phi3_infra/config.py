"""Typed stack configuration, validated in full before any resource is registered.

Keys live in the `phi3-foundry` namespace (camelCase, as written in `Pulumi.<stack>.yaml`) plus
`azure-native:location`. Every key is documented in `Pulumi.yaml`'s `config:` section, and every
optional one has a default there: the Pulumi CLI refuses a stack that lacks a key of the project's
namespace declared with neither `default` nor `value`, whatever the program does with it
(pulumi/pulumi pkg/workspace/config.go, mergeConfig; pulumi/pulumi#21797). So an optional text
key defaults to "" and `trainerArgs` to {}, and the program reads both as unset.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

import pulumi
from pulumi.runtime.config import CONFIG, get_config_env
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from phi3_infra.catalog.regions import AZURE_PUBLIC_REGIONS, normalize_region, region_error
from phi3_infra.catalog.serving_gpus import (
    CUDA_BUILD_MIN_COMPUTE_CAPABILITY,
    capability_text,
    cuda_build_runs_on,
    serving_gpu,
)
from phi3_infra.trainer_flags import TRAINER, TrainerArg, TrainerArgsError, parse_trainer_args

NAMESPACE = "phi3-foundry"
LOCATION_KEY = "azure-native:location"

DEFAULT_GPU_SKUS = (
    "Standard_NC24ads_A100_v4",
    "Standard_NC48ads_A100_v4",
    "Standard_NC40ads_H100_v5",
)
_PREFIX_RULE = re.compile(r"^[a-z][a-z0-9]{1,9}$")
_VM_SKU_RULE = re.compile(r"^Standard_[A-Za-z0-9_]+$")
_AZURE_TAG_VALUE_MAX = 256
# registry/repository[:tag][@sha256:digest], registry host first (a prebuilt image must name it).
_IMAGE_REF_RULE = re.compile(
    r"^(?P<registry>[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d+)?)/"
    r"[a-z0-9]+([._/-][a-z0-9]+)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$"
)
_MODEL_REFERENCE_RULE = re.compile(
    r"^azureml:(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*):(?P<version>[A-Za-z0-9_.-]+)$"
)
# An unquoted date in a stack file reaches the program as Go's time.Time.String(): the CLI's YAML
# decoder (gopkg.in/yaml.v3 resolve.go) reads it as a timestamp, and pulumi/pulumi
# sdk/go/common/resource/config/object.go (unmarshalObject) stores its String().
_GO_MIDNIGHT_UTC = re.compile(r"^(?P<date>\d{4}-\d{2}-\d{2}) 00:00:00 \+0000 UTC$")


def date_from_go_time(value: Any) -> Any:
    """`expiresOn` as the date the user wrote: Go's midnight-UTC String() back to YYYY-MM-DD;
    anything else unchanged, for the date check (the program's and scripts/expire_stacks.py's)."""
    if isinstance(value, str) and (match := _GO_MIDNIGHT_UTC.fullmatch(value)):
        return match["date"]
    return value


# Optional keys whose Pulumi.yaml default ("" or {}) means unset.
_UNSET_WHEN_EMPTY = frozenset(
    to_camel(field)
    for field in (
        "cost_center",
        "training_data",
        "validation_data",
        "trainer_args",
        "trainer_image",
        "server_image",
        "model_reference",
    )
)
# Keys of earlier versions, with what to do instead: an old stack gets the fix, not "a typo?".
RETIRED_KEYS: Mapping[str, str] = {
    "maxNodes": (
        "was renamed trainingNodes: training runs on serverless compute, which brings up "
        "trainingNodes instances for each job (no cluster to scale); rename the key, same value"
    ),
    "idleSecondsBeforeScaleDown": (
        "is retired: serverless compute has no idle nodes (nothing exists between jobs); remove it"
    ),
}
# Azure ML cuts every online request off at 180 s; the server's own limit must stay below.
AZURE_REQUEST_TIMEOUT_CAP_S = 180
DEFAULT_SERVING_INSTANCE_TYPE = "Standard_E4s_v3"
# GPU sizes the built CUDA server image runs on (serving_gpus.py), for messages.
_CUDA_SIZES_EXAMPLE = "Standard_NC4as_T4_v3, Standard_NV36ads_A10_v5 or Standard_NC24ads_A100_v4"


class ConfigError(ValueError):
    """Invalid stack configuration; the message names every bad key and what it accepts."""


class Stage(StrEnum):
    INFRA = "infra"
    TRAIN = "train"
    SERVE = "serve"


class ImageBuild(StrEnum):
    LOCAL = "local"  # BuildKit on this machine (pulumi-docker-build), pushed with an Entra token
    REMOTE = "remote"  # ACR build task in the stack's registry: no Docker needed
    PREBUILT = "prebuilt"  # existing image references, given in trainerImage / serverImage


class PrincipalKind(StrEnum):
    """Who runs `pulumi up`: Azure checks a role assignment's principal type against it."""

    USER = "User"
    SERVICE_PRINCIPAL = "ServicePrincipal"


class EndpointAuthMode(StrEnum):
    KEY = "key"
    AAD_TOKEN = "aadToken"


class StackConfig(BaseModel):
    """One stack's settings. Attributes are snake_case; the YAML keys are their camelCase form."""

    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel)

    location: str
    name_prefix: str = "phi3"
    # Bumped by the user to move every soft-delete-prone name to a fresh hash (see naming.py).
    name_generation: int = Field(default=0, ge=0)
    owner: str = Field(min_length=1, max_length=_AZURE_TAG_VALUE_MAX)
    cost_center: str | None = Field(default=None, max_length=_AZURE_TAG_VALUE_MAX)
    # No "must be in the future" rule: an expired environment must still be refreshable and
    # destroyable, and `pulumi refresh` or `pulumi destroy --run-program` run the program
    # (pulumi/pulumi pkg/cmd/pulumi/operations/destroy.go).
    expires_on: datetime.date
    gpu_skus: tuple[str, ...] = Field(default=DEFAULT_GPU_SKUS, min_length=1)
    # Instances per training job on serverless compute (the job's resources.instanceCount).
    training_nodes: int = Field(default=1, ge=1)
    low_priority: bool = False
    skip_preflight: bool = False
    # Infrastructure only unless asked: a minimal stack creates the environment, no GPU spend.
    stages: tuple[Stage, ...] = (Stage.INFRA,)
    key_vault_purge_protection: bool = False
    # Paths are relative to the folder of Pulumi.yaml (see phi3_infra.paths).
    training_data: str | None = None
    validation_data: str | None = None
    base_model: str = Field(default="microsoft/Phi-3-mini-4k-instruct", min_length=1)
    # Extra `python -m phi3_trainer` flags (name -> value); unset: the trainer's defaults.
    trainer_args: dict[str, TrainerArg] | None = None
    image_build: ImageBuild = ImageBuild.REMOTE
    trainer_image: str | None = None
    server_image: str | None = None
    # The given server image has CUDA torch: GPU serving sizes allowed (a built one gets it itself).
    server_image_gpu: bool = False
    wait_for_training: bool = True
    training_timeout_minutes: int = Field(default=720, ge=1)
    # Part of the training job's name: bumped by the user to train again on the same inputs.
    training_run: int = Field(default=0, ge=0)
    model_reference: str | None = None
    endpoint_auth_mode: EndpointAuthMode = EndpointAuthMode.KEY
    serving_instance_type: str = DEFAULT_SERVING_INSTANCE_TYPE
    serving_instance_count: int = Field(default=1, ge=1)
    request_timeout_seconds: int = Field(default=90, ge=1, lt=AZURE_REQUEST_TIMEOUT_CAP_S)
    max_concurrent_requests: int = Field(default=4, ge=1)
    deployer_principal_type: PrincipalKind = PrincipalKind.USER

    @model_validator(mode="before")
    @classmethod
    def _empty_means_unset(cls, values: Any) -> Any:
        """Pulumi.yaml's "" and {} defaults of optional keys (see the module's docstring)."""
        if not isinstance(values, Mapping):
            return values
        return {
            key: value
            for key, value in values.items()
            if key not in _UNSET_WHEN_EMPTY or value not in ("", {})
        }

    @field_validator("expires_on", mode="before")
    @classmethod
    def _date_from_go_time(cls, value: Any) -> Any:
        return date_from_go_time(value)

    @field_validator("location")
    @classmethod
    def _known_region(cls, value: str) -> str:
        region = normalize_region(value)
        if region not in AZURE_PUBLIC_REGIONS:
            raise ValueError(region_error(value))
        return region

    @field_validator("name_prefix")
    @classmethod
    def _valid_prefix(cls, value: str) -> str:
        if not _PREFIX_RULE.fullmatch(value):
            raise ValueError(
                f"invalid name prefix {value!r}: allowed are 2-10 lowercase letters and digits "
                "starting with a letter (it is part of storage and registry names)"
            )
        return value

    @field_validator("gpu_skus")
    @classmethod
    def _valid_skus(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [sku for sku in value if not _VM_SKU_RULE.fullmatch(sku)]
        if bad:
            raise ValueError(
                f"invalid VM size(s) {bad}: allowed are Azure VM size names like "
                f"{DEFAULT_GPU_SKUS[0]!r}"
            )
        if len(set(value)) != len(value):
            raise ValueError(f"duplicate VM sizes in {list(value)}")
        return value

    @field_validator("stages")
    @classmethod
    def _stages_include_infra(cls, value: tuple[Stage, ...]) -> tuple[Stage, ...]:
        if Stage.INFRA not in value:
            raise ValueError(f"stages must include 'infra'; allowed: {[s.value for s in Stage]}")
        return value

    @field_validator("serving_instance_type")
    @classmethod
    def _valid_instance_type(cls, value: str) -> str:
        if not _VM_SKU_RULE.fullmatch(value):
            raise ValueError(
                f"invalid instance type {value!r}: an Azure VM size like "
                f"{DEFAULT_SERVING_INSTANCE_TYPE!r}"
            )
        return value

    @field_validator("trainer_image", "server_image")
    @classmethod
    def _valid_image_ref(cls, value: str | None) -> str | None:
        if value is not None and not _IMAGE_REF_RULE.fullmatch(value):
            raise ValueError(
                f"invalid image reference {value!r}: expected "
                "<registry>/<repository>:<tag> or <registry>/<repository>@sha256:<digest>"
            )
        return value

    @field_validator("model_reference")
    @classmethod
    def _valid_model_reference(cls, value: str | None) -> str | None:
        if value is not None and not _MODEL_REFERENCE_RULE.fullmatch(value):
            raise ValueError(
                f"invalid model reference {value!r}: expected azureml:<name>:<version> of a model "
                "registered in this stack's project"
            )
        return value

    def model_name_and_version(self) -> tuple[str, str] | None:
        match = _MODEL_REFERENCE_RULE.fullmatch(self.model_reference or "")
        return (match["name"], match["version"]) if match else None

    # Before pydantic's typing, so that a null, a map or a mistyped value gets the trainer's
    # rule (phi3_infra.trainer_flags) instead of one type error per member of TrainerArg.
    @field_validator("trainer_args", mode="before")
    @classmethod
    def _valid_trainer_args(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value  # None, or not a map: pydantic's own message
        try:
            return parse_trainer_args(value)
        except TrainerArgsError as error:
            key = config_key("trainer_args")
            lines = [f"{key}[{name}]: {why}" for name, why in error.problems.items()]
            raise ValueError(
                f"flags {TRAINER} would refuse in the job:\n  " + "\n  ".join(lines)
            ) from None

    @model_validator(mode="after")
    def _stages_have_what_they_need(self) -> StackConfig:
        problems = [
            *self._training_problems(),
            *self._serving_problems(),
            *self._image_problems(),
            *self._serving_hardware_problems(),
        ]
        if problems:
            raise ValueError("\n  ".join(problems))
        return self

    def _training_problems(self) -> list[str]:
        if Stage.TRAIN in self.stages:
            if self.training_data is None:
                return [f"{config_key('training_data')}: required when stages include 'train'"]
            return []
        set_keys = [
            key for key in ("training_data", "validation_data") if getattr(self, key) is not None
        ]
        return [f"{config_key(key)}: only used when stages include 'train'" for key in set_keys]

    def _serving_problems(self) -> list[str]:
        reference = config_key("model_reference")
        if Stage.SERVE not in self.stages:
            return [f"{reference}: only used when stages include 'serve'"] * bool(
                self.model_reference
            )
        if Stage.TRAIN in self.stages:
            # With 'train', a modelReference is served instead of the trained model (a rollback,
            # or a pin while a retrain runs); without one the trained model is served, as soon
            # as it is registered (waitForTraining false: by a later `pulumi up`).
            if (self.trainer_args or {}).get("merge_output") is False:
                return [
                    f"{config_key('trainer_args')}: merge_output false leaves no merged model "
                    "to serve (the server image cannot download the base model); drop it or "
                    "drop 'serve'"
                ]
            return []
        if self.model_reference is None:
            return [
                f"{reference}: required when stages include 'serve' without 'train' "
                "(an Azure ML model id, azureml:<name>:<version>)"
            ]
        return []

    def _image_problems(self) -> list[str]:
        needed = {
            "trainer_image": Stage.TRAIN in self.stages,
            "server_image": Stage.SERVE in self.stages,
        }
        problems = []
        for key, used in needed.items():
            given = getattr(self, key) is not None
            if self.image_build is ImageBuild.PREBUILT and used and not given:
                problems.append(f"{config_key(key)}: required when imageBuild is 'prebuilt'")
            if self.image_build is not ImageBuild.PREBUILT and given:
                problems.append(
                    f"{config_key(key)}: only used when imageBuild is 'prebuilt' "
                    f"(imageBuild is {self.image_build.value!r}: the image is built)"
                )
        return problems

    def _serving_hardware_problems(self) -> list[str]:
        """A built server image follows the serving size (build_context.py: the CUDA variant on an
        NVIDIA size); a given one is CPU-only unless serverImageGpu says it has CUDA torch."""
        gpu_image, size_key = config_key("server_image_gpu"), config_key("serving_instance_type")
        prebuilt = self.image_build is ImageBuild.PREBUILT
        if self.server_image_gpu and (not prebuilt or self.server_image is None):
            return [
                f"{gpu_image}: only valid with imageBuild 'prebuilt' and a serverImage (it says "
                "that image has CUDA torch; the image this project builds gets CUDA torch by "
                "itself on a GPU servingInstanceType)"
            ]
        if Stage.SERVE not in self.stages:
            return []
        size, gpu = self.serving_instance_type, serving_gpu(self.serving_instance_type)
        if prebuilt and gpu is not None and not self.server_image_gpu:
            return [
                f"{size_key}: {size} is a GPU size ({gpu.model}), but serverImage is taken to "
                "have CPU-only torch, so the GPU would be paid for and never used; set "
                f"{gpu_image} true if that image has CUDA torch, serve on a CPU size such as "
                f"{DEFAULT_SERVING_INSTANCE_TYPE}, or let the project build the image "
                "(imageBuild remote)"
            ]
        if prebuilt and gpu is None and self.server_image_gpu:
            return [
                f"{gpu_image}: true says serverImage runs on an NVIDIA GPU, but {size_key} "
                f"{size} has none (no GPU row of Learn's 'Managed online endpoints SKU list'); "
                f"serve on a GPU size such as {_CUDA_SIZES_EXAMPLE}, or set {gpu_image} false"
            ]
        if not prebuilt and gpu is not None and not cuda_build_runs_on(gpu):
            return [
                f"{size_key}: {size} has a {gpu.model} (compute capability "
                f"{capability_text(gpu.compute_capability)}), which the built server image's "
                "CUDA torch cannot run on "
                f"({capability_text(CUDA_BUILD_MIN_COMPUTE_CAPABILITY)} and newer: "
                "CUDA 13.0, serving_image/constraints-cuda.txt); serve on a newer GPU size such "
                f"as {_CUDA_SIZES_EXAMPLE}, or bring an image built for it: imageBuild "
                "prebuilt, serverImage <ref> and serverImageGpu true"
            ]
        return []

    def uses(self, stage: Stage) -> bool:
        return stage in self.stages


def config_key(field: str) -> str:
    """The YAML key for a StackConfig field or alias ('training_nodes' ->
    'phi3-foundry:trainingNodes')."""
    if field == "location":
        return LOCATION_KEY
    return f"{NAMESPACE}:{to_camel(field)}"


def _error_line(error: Mapping[str, Any]) -> str:
    location = error["loc"]
    if not location:  # a rule across keys: its message names them
        return str(error["msg"]).removeprefix("Value error, ")
    key = config_key(str(location[0]))
    where = "".join(f"[{part}]" for part in location[1:])
    if error["type"] == "extra_forbidden":
        known = ", ".join(config_key(name) for name in StackConfig.model_fields)
        return f"{key}: unknown key (a typo?). Known keys: {known}"
    if error["type"] == "missing":
        return f"{key}: required value missing; set it with `pulumi config set {key} <value>`"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "enum":
        message = f"{message} (got {error['input']!r})"
    return f"{key}{where}: {message}"


def parse_stack_config(values: Mapping[str, Any]) -> StackConfig:
    """Validate camelCase values (plus `location`); raise one ConfigError listing every problem."""
    retired = [f"{NAMESPACE}:{key} {RETIRED_KEYS[key]}" for key in values if key in RETIRED_KEYS]
    current = {key: value for key, value in values.items() if key not in RETIRED_KEYS}
    try:
        config = StackConfig.model_validate(current)
    except ValidationError as error:
        raise _config_error(retired + [_error_line(item) for item in error.errors()]) from None
    if retired:
        raise _config_error(retired)
    return config


def _config_error(lines: list[str]) -> ConfigError:
    return ConfigError("invalid stack configuration:\n  " + "\n  ".join(lines))


def _decode(raw: str) -> Any:
    """Pulumi passes lists and maps as JSON text; scalars stay strings for pydantic to coerce."""
    if raw.lstrip().startswith(("[", "{")):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    return raw


def _namespace_keys(all_keys: Iterable[str]) -> list[str]:
    prefix = f"{NAMESPACE}:"
    return sorted(key.removeprefix(prefix) for key in all_keys if key.startswith(prefix))


def config_from_flat(flat: Mapping[str, str]) -> StackConfig:
    """Validate a stack's config as the engine passes it (`namespace:key` -> text), as read
    from the runtime or from a `Pulumi.<stack>.yaml`."""
    keys = _namespace_keys(flat)
    if "location" in keys:
        raise _config_error(
            [f"{NAMESPACE}:location: unknown key; set the region as {LOCATION_KEY}"]
        )
    values: dict[str, Any] = {key: _decode(flat[f"{NAMESPACE}:{key}"]) for key in keys}
    if LOCATION_KEY in flat:
        values["location"] = flat[LOCATION_KEY]
    return parse_stack_config(values)


def load_stack_config() -> StackConfig:
    """Read and validate this stack's configuration from the Pulumi runtime."""
    # pulumi.Config reads single keys only; unknown keys (typos) are found by listing the
    # namespace in the runtime's config bag (set by the engine or by mocks).
    keys = _namespace_keys({*CONFIG.get(), *get_config_env()})
    namespace = pulumi.Config(NAMESPACE)
    flat = {f"{NAMESPACE}:{key}": namespace.require(key) for key in keys}
    location = pulumi.Config("azure-native").get("location")
    if location is not None:
        flat[LOCATION_KEY] = location
    return config_from_flat(flat)
