"""Stack configuration: defaults as documented, and every bad value rejected before any resource."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from phi3_infra.config import (
    DEFAULT_GPU_SKUS,
    ConfigError,
    StackConfig,
    Stage,
    config_key,
    parse_stack_config,
)
from scripts.plan import plan_stack

MINIMAL = {
    "azure-native:location": "eastus2",
    "phi3-foundry:owner": "team@contoso.com",
    "phi3-foundry:expiresOn": "2027-01-31",
    "phi3-foundry:stages": '["infra"]',
}


def _values(**overrides: Any) -> dict[str, Any]:
    minimal = {"location": "eastus2", "owner": "me", "expiresOn": "2027-01-31"}
    return minimal | {"trainingData": "data.jsonl"} | overrides


def _error(**overrides: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(_values(**overrides))
    return str(caught.value)


def test_minimal_config_gets_documented_defaults() -> None:
    config = parse_stack_config(_values())
    assert config == StackConfig.model_validate(
        {
            "location": "eastus2",
            "owner": "me",
            "expiresOn": datetime.date(2027, 1, 31),
            "namePrefix": "phi3",
            "nameGeneration": 0,
            "gpuSkus": list(DEFAULT_GPU_SKUS),
            "maxNodes": 1,
            "lowPriority": False,
            "idleSecondsBeforeScaleDown": 300,
            "skipPreflight": False,
            "stages": ["infra", "train", "serve"],
            "keyVaultPurgeProtection": False,
            "trainingData": "data.jsonl",
            "baseModel": "microsoft/Phi-3-mini-4k-instruct",
            "imageBuild": "remote",
            "waitForTraining": True,
            "trainingTimeoutMinutes": 720,
            "endpointAuthMode": "key",
            "servingInstanceType": "Standard_E4s_v3",
            "servingInstanceCount": 1,
            "requestTimeoutSeconds": 90,
            "maxConcurrentRequests": 4,
        }
    )
    assert config.cost_center is None
    assert config.stages == (Stage.INFRA, Stage.TRAIN, Stage.SERVE)


def test_pulumi_yaml_documents_every_key_with_the_same_default(repo_root: Path) -> None:
    documented = yaml.safe_load((repo_root / "Pulumi.yaml").read_text())["config"]
    fields = {config_key(name).split(":", 1)[1]: f for name, f in StackConfig.model_fields.items()}
    fields.pop("location")  # the provider's own key, azure-native:location
    assert set(documented) == set(fields)
    for key, field in fields.items():
        entry = documented[key]
        assert entry["description"], key
        if field.is_required() or field.default is None:
            assert "default" not in entry, key
        else:
            default = field.default
            expected = list(default) if isinstance(default, tuple) else default
            assert entry["default"] == expected, key


def test_engine_text_values_are_coerced() -> None:
    """The engine passes every value as text; lists arrive as JSON."""
    config = parse_stack_config(
        _values(
            location="East US 2",
            gpuSkus=["Standard_NC24ads_A100_v4"],
            maxNodes="4",
            lowPriority="true",
            stages=["infra", "train"],
        )
    )
    assert config.location == "eastus2"
    assert config.gpu_skus == ("Standard_NC24ads_A100_v4",)
    assert config.max_nodes == 4
    assert config.low_priority is True
    assert config.stages == (Stage.INFRA, Stage.TRAIN)


def test_config_is_frozen() -> None:
    config = parse_stack_config(_values())
    with pytest.raises(ValueError, match="frozen"):
        config.max_nodes = 3


def test_unknown_region_names_the_key_close_matches_and_allowed_values() -> None:
    message = _error(location="eastus3")
    assert "azure-native:location" in message
    assert "'eastus3'" in message
    assert "Did you mean eastus" in message
    assert "swedencentral" in message  # the allowed list


@pytest.mark.parametrize("prefix", ["Phi3", "p", "phi-3", "3phi", "averylongprefix"])
def test_bad_prefix(prefix: str) -> None:
    message = _error(namePrefix=prefix)
    assert f"phi3-foundry:namePrefix: invalid name prefix {prefix!r}" in message
    assert "2-10 lowercase letters and digits" in message


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("maxNodes", -1, "phi3-foundry:maxNodes: Input should be greater than or equal to 1"),
        ("maxNodes", 0, "phi3-foundry:maxNodes: Input should be greater than or equal to 1"),
        ("nameGeneration", -2, "phi3-foundry:nameGeneration: Input should be greater than or"),
        ("idleSecondsBeforeScaleDown", 30, "phi3-foundry:idleSecondsBeforeScaleDown: Input should"),
        ("lowPriority", "maybe", "phi3-foundry:lowPriority: Input should be a valid boolean"),
        ("expiresOn", "next year", "phi3-foundry:expiresOn: Input should be a valid date"),
        ("gpuSkus", [], "phi3-foundry:gpuSkus: Tuple should have at least 1 item"),
        ("gpuSkus", ["NC24"], "phi3-foundry:gpuSkus: invalid VM size(s) ['NC24']"),
        ("stages", ["train"], "phi3-foundry:stages: stages must include 'infra'"),
        ("stages", ["infra", "deploy"], "phi3-foundry:stages[1]: Input should be 'infra', 'train'"),
        ("owner", "", "phi3-foundry:owner: String should have at least 1 character"),
    ],
)
def test_bad_values_name_the_key_and_the_rule(key: str, value: Any, expected: str) -> None:
    assert expected in _error(**{key: value})


def test_missing_required_values_say_how_to_set_them() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_stack_config({"owner": "me"})
    message = str(caught.value)
    assert "azure-native:location: required value missing" in message
    assert "`pulumi config set phi3-foundry:expiresOn <value>`" in message


def test_unknown_key_is_rejected_with_the_known_keys() -> None:
    message = _error(maxNode=2)
    assert "phi3-foundry:maxNode: unknown key (a typo?)" in message
    assert "phi3-foundry:maxNodes" in message


def test_all_problems_are_reported_in_one_error() -> None:
    message = _error(location="mars", namePrefix="X", maxNodes=-1)
    assert message.count("\n") == 3
    for key in ("azure-native:location", "phi3-foundry:namePrefix", "phi3-foundry:maxNodes"):
        assert key in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"azure-native:location": "eastus3"}, "azure-native:location: unknown Azure region"),
        ({"phi3-foundry:namePrefix": "PHI"}, "phi3-foundry:namePrefix: invalid name prefix"),
        ({"phi3-foundry:maxNodes": "-1"}, "phi3-foundry:maxNodes: Input should be greater"),
        ({"phi3-foundry:expiresOn": None}, "phi3-foundry:expiresOn: required value missing"),
        ({"phi3-foundry:maxNode": "2"}, "phi3-foundry:maxNode: unknown key"),
        ({"phi3-foundry:location": "eastus2"}, "set the region as azure-native:location"),
        ({"phi3-foundry:gpuSkus": '["Standard_NC24ads_A100_v4", 5]'}, "gpuSkus[1]"),
    ],
)
def test_invalid_config_fails_before_any_resource_is_registered(
    registered: list[str], change: dict[str, str | None], expected: str
) -> None:
    config = {key: value for key, value in (MINIMAL | change).items() if value is not None}
    with pytest.raises(ConfigError, match="invalid stack configuration") as caught:
        plan_stack(config, "eastus2")
    assert expected in str(caught.value)
    assert registered == []


def test_valid_minimal_config_registers_resources(registered: list[str]) -> None:
    """Counterpart of the test above: the same recorder sees every resource of a good config."""
    run = plan_stack(MINIMAL, "eastus2")
    assert len(registered) == len(run.resources) == 22
    assert "costCenter" not in run.named("storage").inputs["tags"]


def test_engine_config_from_the_environment_is_validated_too(
    monkeypatch: pytest.MonkeyPatch, registered: list[str]
) -> None:
    """`pulumi up` hands the program its config as PULUMI_CONFIG; typos there fail the same way."""
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps(MINIMAL | {"phi3-foundry:lowPriorty": "true"}))
    with pytest.raises(ConfigError, match="phi3-foundry:lowPriorty: unknown key"):
        plan_stack({}, "eastus2")
    assert registered == []
