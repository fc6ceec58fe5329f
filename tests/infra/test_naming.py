"""Names: deterministic, valid for each Azure type, disjoint across stacks and regions."""

from __future__ import annotations

import dataclasses
import re

import pytest

from phi3_infra.config import StackConfig, parse_stack_config
from phi3_infra.naming import StackNames, stack_names
from phi3_infra.offline import OfflineRun

# Azure's naming rules per resource type.
RULES = {
    "resource_group": re.compile(r"^[-\w.()]{1,89}[-\w()]$"),
    "storage_account": re.compile(r"^[a-z0-9]{3,24}$"),
    "key_vault": re.compile(r"^(?=.{3,24}$)[a-zA-Z](?!.*--)[a-zA-Z0-9-]*[a-zA-Z0-9]$"),
    "container_registry": re.compile(r"^[a-zA-Z0-9]{5,50}$"),
    "log_analytics": re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-]{2,61}[a-zA-Z0-9]$"),
    "app_insights": re.compile(r"^[^%&\\?/]{1,260}$"),
    "hub": re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{2,32}$"),
    "project": re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{2,32}$"),
    "identity": re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{2,127}$"),
    # Online endpoints: 3-32 characters, a letter first, letters, digits and hyphens.
    "online_endpoint": re.compile(r"^[a-zA-Z][a-zA-Z0-9-]{2,31}$"),
}


def _config(**overrides: object) -> StackConfig:
    values = {"location": "eastus2", "owner": "me", "expiresOn": "2027-01-31", "stages": ["infra"]}
    return parse_stack_config(values | overrides)


def _all(names: StackNames) -> dict[str, str]:
    return dataclasses.asdict(names)


def test_rules_cover_every_name() -> None:
    assert set(RULES) == {field.name for field in dataclasses.fields(StackNames)}


@pytest.mark.parametrize(
    ("prefix", "stack", "region"),
    [
        ("phi3", "eastus2", "eastus2"),
        ("zz", "a", "westus"),
        ("abcdefghij", "Team_A.prod-Environment-with-a-very-long-name", "australiasoutheast"),
        ("x9", "---", "swedencentral"),
    ],
)
def test_names_follow_each_type_rule(prefix: str, stack: str, region: str) -> None:
    names = stack_names(_config(namePrefix=prefix, location=region), "phi3-foundry", stack)
    for kind, name in _all(names).items():
        assert RULES[kind].fullmatch(name), f"{kind}: {name!r}"
        assert prefix in name


def test_names_are_deterministic() -> None:
    assert stack_names(_config(), "phi3-foundry", "eastus2") == stack_names(
        _config(), "phi3-foundry", "eastus2"
    )


@pytest.mark.parametrize(
    ("other_config", "other_stack"),
    [
        ({"location": "swedencentral"}, "eastus2"),  # same stack name, other region
        ({}, "eastus2-dev"),  # same region, other stack
        ({"nameGeneration": 1}, "eastus2"),  # fresh names after a blocked soft-deleted one
    ],
)
def test_any_change_of_stack_region_or_generation_changes_every_name(
    other_config: dict[str, object], other_stack: str
) -> None:
    base = _all(stack_names(_config(), "phi3-foundry", "eastus2"))
    other = _all(stack_names(_config(**other_config), "phi3-foundry", other_stack))
    assert not set(base.values()) & set(other.values())


def test_example_stacks_use_disjoint_valid_names(example_runs: dict[str, OfflineRun]) -> None:
    # The cluster's name is scoped to its workspace, so every stack may call it the same.
    east, sweden = (
        {
            r.type + "/" + r.name: r.azure_name
            for r in run.resources
            if r.type.startswith("azure-native:")
            and r.type != "azure-native:machinelearningservices:Compute"
        }
        for run in example_runs.values()
    )
    assert set(east) == set(sweden)
    assert not set(east.values()) & set(sweden.values())


def test_unique_and_soft_deletable_name_sets() -> None:
    names = stack_names(_config(), "phi3-foundry", "eastus2")
    assert names.globally_unique() == {
        "storage_account": names.storage_account,
        "key_vault": names.key_vault,
        "container_registry": names.container_registry,
    }
    assert names.soft_deletable() == {
        "key_vault": names.key_vault,
        "hub": names.hub,
        "project": names.project,
    }
