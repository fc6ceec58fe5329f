"""Names: deterministic, valid for each Azure type, disjoint across stacks, regions and
subscriptions."""

from __future__ import annotations

import dataclasses
import re

import pytest

from phi3_infra.config import StackConfig, parse_stack_config
from phi3_infra.naming import StackNames, stack_names
from phi3_infra.tooling.offline import OfflineRun

SUBSCRIPTION = "00000000-0000-4000-8000-000000000001"
OTHER_SUBSCRIPTION = "11111111-2222-4333-8444-555555555555"

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
    "endpoint_identity": re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{2,127}$"),
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
    config = _config(namePrefix=prefix, location=region)
    names = stack_names(config, "phi3-foundry", stack, SUBSCRIPTION)
    for kind, name in _all(names).items():
        assert RULES[kind].fullmatch(name), f"{kind}: {name!r}"
        assert prefix in name


def test_names_are_deterministic() -> None:
    # A subscription id is a GUID: however Azure or the user spells its case, the same names.
    assert stack_names(_config(), "phi3-foundry", "eastus2", SUBSCRIPTION) == stack_names(
        _config(), "phi3-foundry", "eastus2", SUBSCRIPTION.upper()
    )


def test_same_stack_and_region_in_two_subscriptions_get_disjoint_names() -> None:
    # Two teams following the README: same prefix, project, stack name, region and generation.
    ours = stack_names(_config(), "phi3-foundry", "eastus2", SUBSCRIPTION)
    theirs = stack_names(_config(), "phi3-foundry", "eastus2", OTHER_SUBSCRIPTION)
    assert not set(ours.globally_unique().values()) & set(theirs.globally_unique().values())
    assert ours.online_endpoint != theirs.online_endpoint  # unique per region across Azure


def test_names_need_a_subscription_guid() -> None:
    with pytest.raises(ValueError, match="'my-subscription' is not a subscription GUID"):
        stack_names(_config(), "phi3-foundry", "eastus2", "my-subscription")


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
    base = _all(stack_names(_config(), "phi3-foundry", "eastus2", SUBSCRIPTION))
    other = _all(stack_names(_config(**other_config), "phi3-foundry", other_stack, SUBSCRIPTION))
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
    names = stack_names(_config(), "phi3-foundry", "eastus2", SUBSCRIPTION)
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
