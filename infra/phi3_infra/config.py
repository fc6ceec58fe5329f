"""Typed stack configuration, validated in full before any resource is registered.

Keys live in the `phi3-foundry` namespace (camelCase, as written in `Pulumi.<stack>.yaml`) plus
`azure-native:location`. Every key is documented in `Pulumi.yaml`'s `config:` section.
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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from phi3_infra.regions import AZURE_PUBLIC_REGIONS, normalize_region, region_error

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


class ConfigError(ValueError):
    """Invalid stack configuration; the message names every bad key and what it accepts."""


class Stage(StrEnum):
    INFRA = "infra"
    TRAIN = "train"
    SERVE = "serve"


class StackConfig(BaseModel):
    """One stack's settings. Attributes are snake_case; the YAML keys are their camelCase form."""

    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel)

    location: str
    name_prefix: str = "phi3"
    # Bumped by the user to move every soft-delete-prone name to a fresh hash (see naming.py).
    name_generation: int = Field(default=0, ge=0)
    owner: str = Field(min_length=1, max_length=_AZURE_TAG_VALUE_MAX)
    cost_center: str | None = Field(default=None, min_length=1, max_length=_AZURE_TAG_VALUE_MAX)
    # No "must be in the future" rule: `pulumi destroy` runs the program too, and an expired
    # environment must still be destroyable.
    expires_on: datetime.date
    gpu_skus: tuple[str, ...] = Field(default=DEFAULT_GPU_SKUS, min_length=1)
    max_nodes: int = Field(default=1, ge=1)
    low_priority: bool = False
    idle_seconds_before_scale_down: int = Field(default=300, ge=60)
    skip_preflight: bool = False
    stages: tuple[Stage, ...] = (Stage.INFRA,)
    key_vault_purge_protection: bool = False

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


def config_key(field: str) -> str:
    """The YAML key for a StackConfig field or alias ('max_nodes' -> 'phi3-foundry:maxNodes')."""
    if field == "location":
        return LOCATION_KEY
    return f"{NAMESPACE}:{to_camel(field)}"


def _error_line(error: Mapping[str, Any]) -> str:
    location = error["loc"]
    key = config_key(str(location[0])) if location else NAMESPACE
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
    try:
        return StackConfig.model_validate(values)
    except ValidationError as error:
        raise _config_error([_error_line(item) for item in error.errors()]) from None


def _config_error(lines: list[str]) -> ConfigError:
    return ConfigError("invalid stack configuration:\n  " + "\n  ".join(lines))


def _decode(raw: str) -> Any:
    """Pulumi passes lists as JSON text; scalars stay strings for pydantic to coerce."""
    if raw.lstrip().startswith("["):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    return raw


def _namespace_keys(all_keys: Iterable[str]) -> list[str]:
    prefix = f"{NAMESPACE}:"
    return sorted(key.removeprefix(prefix) for key in all_keys if key.startswith(prefix))


def load_stack_config() -> StackConfig:
    """Read and validate this stack's configuration from the Pulumi runtime."""
    # pulumi.Config reads single keys only; unknown keys (typos) are found by listing the
    # namespace in the runtime's config bag (set by the engine or by mocks).
    keys = _namespace_keys({*CONFIG.get(), *get_config_env()})
    if "location" in keys:
        raise _config_error(
            [f"{NAMESPACE}:location: unknown key; set the region as {LOCATION_KEY}"]
        )
    namespace = pulumi.Config(NAMESPACE)
    values: dict[str, Any] = {key: _decode(namespace.require(key)) for key in keys}
    location = pulumi.Config("azure-native").get("location")
    if location is not None:
        values["location"] = location
    return parse_stack_config(values)
