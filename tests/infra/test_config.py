"""Stack configuration: what the Pulumi CLI and the program accept, and every bad value rejected
before any resource.

`pulumi up` merges Pulumi.yaml's `config:` into the stack's config and checks it before the program
starts (replayed by tests/fakes/pulumi_cli.py around every offline run, see tests/conftest.py): a
stack missing a truly required key gets the CLI's message, a value of the wrong type for a typed
key too; everything else is the program's own message.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from phi3_infra.cli.plan import plan_stack
from phi3_infra.config import (
    DEFAULT_GPU_SKUS,
    ConfigError,
    StackConfig,
    Stage,
    config_from_flat,
    config_key,
    parse_stack_config,
)
from tests.fakes.pulumi_cli import (
    CliConfigError,
    Project,
    apply_project_config,
    flat_stack_config,
    load_project,
    load_stack,
    program_config,
)

# A new user's first stack: region, owner and expiry, nothing else.
MINIMAL = {
    "azure-native:location": "eastus2",
    "phi3-foundry:owner": "team@contoso.com",
    "phi3-foundry:expiresOn": "2027-01-31",
}
STACK_FILES = sorted(Path(__file__).resolve().parents[2].glob("Pulumi.*.yaml"))
GPU_SERVING = "Standard_NC24ads_A100_v4"
SERVE_ONLY = {"stages": ["infra", "serve"], "modelReference": "azureml:phi3-ft:1"}


@pytest.fixture(scope="module")
def project(repo_root: Path) -> Project:
    return load_project(repo_root / "Pulumi.yaml")


def _values(**overrides: Any) -> dict[str, Any]:
    return {"location": "eastus2", "owner": "me", "expiresOn": "2027-01-31"} | overrides


def _error(**overrides: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(_values(**overrides))
    return str(caught.value)


# ---- Pulumi.yaml and the CLI ----


@pytest.mark.parametrize("stack_file", STACK_FILES, ids=lambda path: path.name)
def test_every_stack_file_passes_the_cli_and_the_program(
    project: Project, stack_file: Path, registered: list[str]
) -> None:
    stack = stack_file.name.split(".")[1]
    merged = program_config(apply_project_config(project, stack, load_stack(stack_file, project)))
    run = plan_stack(merged, stack)
    assert registered and len(registered) == len(run.resources)
    # The CLI hands over an unquoted date as Go's time.String(); the tag is still the date.
    assert merged["phi3-foundry:expiresOn"] == "2027-03-31 00:00:00 +0000 UTC"
    assert run.named("storage").inputs["tags"]["expiresOn"] == "2027-03-31"


def test_eastus2_runs_the_whole_pipeline_and_swedencentral_the_infrastructure(
    project: Project, repo_root: Path
) -> None:
    def stages(stack: str) -> tuple[Stage, ...]:
        stack_file = load_stack(repo_root / f"Pulumi.{stack}.yaml", project)
        merged = apply_project_config(project, stack, stack_file)
        return config_from_flat(program_config(merged)).stages

    assert stages("eastus2") == (Stage.INFRA, Stage.TRAIN, Stage.SERVE)
    assert stages("swedencentral") == (Stage.INFRA,)


def test_minimal_stack_passes_the_cli_and_creates_only_the_environment(
    registered: list[str],
) -> None:
    run = plan_stack(MINIMAL, "eastus2")
    assert run.outputs["stages"] == ["infra"]
    assert len(registered) == len(run.resources) > 0
    assert not run.of_type("azure-native:machinelearningservices:Job")
    # costCenter arrives as Pulumi.yaml's "" default: unset, so no tag.
    assert "costCenter" not in run.named("storage").inputs["tags"]


def test_only_owner_and_expiry_are_required_by_the_cli(project: Project) -> None:
    required = {
        key
        for key, declared in project.config.items()
        if declared.default is None and declared.value is None
    }
    assert required == {"owner", "expiresOn"}


def test_pulumi_yaml_defaults_are_the_programs_defaults(project: Project) -> None:
    """The program gets every default from the CLI; they must mean what it would do alone."""
    merged = apply_project_config(project, "eastus2", flat_stack_config(MINIMAL))
    assert config_from_flat(program_config(merged)) == config_from_flat(MINIMAL)


def test_pulumi_yaml_documents_every_key(project: Project, repo_root: Path) -> None:
    fields = {config_key(name).split(":", 1)[1] for name in StackConfig.model_fields}
    fields.remove("location")  # azure-native:location, the provider's own key
    assert set(project.config) == fields
    documented = yaml.safe_load((repo_root / "Pulumi.yaml").read_text())["config"]
    assert all(entry["description"] for entry in documented.values())


@pytest.mark.parametrize(
    ("missing", "expected"),
    [
        (["phi3-foundry:owner"], "missing configuration value 'owner'"),
        (
            ["phi3-foundry:owner", "phi3-foundry:expiresOn"],
            "missing configuration values 'expiresOn' and 'owner'",
        ),
    ],
)
def test_missing_required_keys_get_the_clis_message_and_no_program_run(
    registered: list[str], missing: list[str], expected: str
) -> None:
    config = {key: value for key, value in MINIMAL.items() if key not in missing}
    with pytest.raises(CliConfigError) as caught:
        plan_stack(config, "eastus2")
    assert str(caught.value) == f"validating stack config: Stack 'eastus2' is {expected}"
    assert registered == []


@pytest.mark.parametrize(
    ("change", "key", "type_name"),
    [
        ({"phi3-foundry:lowPriority": "maybe"}, "lowPriority", "boolean"),
        ({"phi3-foundry:trainingNodes": "two"}, "trainingNodes", "integer"),
        ({"phi3-foundry:gpuSkus": '["Standard_NC24ads_A100_v4", 5]'}, "gpuSkus", "array<string>"),
        # One key at a time, in sorted order: gpuSkus is reported, lowPriority is not.
        (
            {"phi3-foundry:lowPriority": "maybe", "phi3-foundry:gpuSkus": '"NC24"'},
            "gpuSkus",
            "array<string>",
        ),
    ],
)
def test_wrong_types_get_the_clis_message(
    registered: list[str], change: dict[str, str], key: str, type_name: str
) -> None:
    with pytest.raises(CliConfigError) as caught:
        plan_stack(MINIMAL | change, "eastus2")
    assert str(caught.value) == (
        f"validating stack config: Stack 'eastus2' with configuration key '{key}' "
        f"must be of type '{type_name}'"
    )
    assert registered == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"azure-native:location": "eastus3"}, "azure-native:location: unknown Azure region"),
        ({"azure-native:location": None}, "azure-native:location: required value missing"),
        ({"phi3-foundry:namePrefix": "PHI"}, "phi3-foundry:namePrefix: invalid name prefix"),
        # An integer to the CLI, out of range for the program.
        ({"phi3-foundry:trainingNodes": "0"}, "phi3-foundry:trainingNodes: Input should be"),
        ({"phi3-foundry:expiresOn": "next year"}, "phi3-foundry:expiresOn: Input should be"),
        ({"phi3-foundry:owner": ""}, "phi3-foundry:owner: String should have at least 1"),
        ({"phi3-foundry:trainingNode": "2"}, "phi3-foundry:trainingNode: unknown key"),
        ({"phi3-foundry:location": "eastus2"}, "set the region as azure-native:location"),
        ({"phi3-foundry:maxNodes": "2"}, "phi3-foundry:maxNodes was renamed trainingNodes"),
        (
            {"phi3-foundry:idleSecondsBeforeScaleDown": "300"},
            "phi3-foundry:idleSecondsBeforeScaleDown is retired",
        ),
        ({"phi3-foundry:stages": '["infra", "train"]'}, "phi3-foundry:trainingData: required"),
    ],
)
def test_everything_else_gets_the_programs_message_before_any_resource(
    registered: list[str], change: dict[str, str | None], expected: str
) -> None:
    config = {key: value for key, value in (MINIMAL | change).items() if value is not None}
    with pytest.raises(ConfigError, match="invalid stack configuration") as caught:
        plan_stack(config, "eastus2")
    assert expected in str(caught.value)
    assert registered == []


def test_engine_config_from_the_environment_is_validated_too(
    monkeypatch: pytest.MonkeyPatch, registered: list[str]
) -> None:
    """`pulumi up` hands the program its config as PULUMI_CONFIG; typos there fail the same way."""
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps(MINIMAL | {"phi3-foundry:lowPriorty": "true"}))
    with pytest.raises(ConfigError, match="phi3-foundry:lowPriorty: unknown key"):
        plan_stack(MINIMAL, "eastus2")
    assert registered == []


# ---- the program's own rules ----


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
            "trainingNodes": 1,
            "lowPriority": False,
            "skipPreflight": False,
            "stages": ["infra"],
            "keyVaultPurgeProtection": False,
            "baseModel": "microsoft/Phi-3-mini-4k-instruct",
            "imageBuild": "remote",
            "serverImageGpu": False,
            "waitForTraining": True,
            "trainingTimeoutMinutes": 720,
            "trainingRun": 0,
            "endpointAuthMode": "key",
            "servingInstanceType": "Standard_E4s_v3",
            "servingInstanceCount": 1,
            "requestTimeoutSeconds": 90,
            "maxConcurrentRequests": 4,
        }
    )
    assert config.cost_center is None
    assert config.stages == (Stage.INFRA,)


def test_empty_optional_values_mean_unset() -> None:
    """Pulumi.yaml's "" and {} defaults, as the CLI hands them over."""
    keys = ("costCenter", "validationData", "trainerImage", "serverImage", "modelReference")
    config = parse_stack_config(_values(trainingData="", trainerArgs={}, **dict.fromkeys(keys, "")))
    assert config == parse_stack_config(_values())


def test_engine_text_values_are_coerced() -> None:
    """The engine passes every value as text; lists arrive as JSON."""
    config = parse_stack_config(
        _values(
            location="East US 2",
            gpuSkus=["Standard_NC24ads_A100_v4"],
            trainingNodes="4",
            lowPriority="true",
            expiresOn="2027-01-31 00:00:00 +0000 UTC",  # an unquoted date, through the CLI
            stages=["infra", "train"],
            trainingData="data.jsonl",
        )
    )
    assert config.location == "eastus2"
    assert config.gpu_skus == ("Standard_NC24ads_A100_v4",)
    assert config.training_nodes == 4
    assert config.low_priority is True
    assert config.expires_on == datetime.date(2027, 1, 31)
    assert config.stages == (Stage.INFRA, Stage.TRAIN)


def test_config_is_frozen() -> None:
    config = parse_stack_config(_values())
    with pytest.raises(ValueError, match="frozen"):
        config.training_nodes = 3  # type: ignore[misc]  # what the test shows refused


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
        ("trainingNodes", -1, "phi3-foundry:trainingNodes: Input should be greater than or equal"),
        ("trainingNodes", 0, "phi3-foundry:trainingNodes: Input should be greater than or equal"),
        ("nameGeneration", -2, "phi3-foundry:nameGeneration: Input should be greater than or"),
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
    message = _error(trainingNode=2)
    assert "phi3-foundry:trainingNode: unknown key (a typo?)" in message
    assert "phi3-foundry:trainingNodes" in message


def test_retired_keys_say_what_replaced_them_with_the_other_problems() -> None:
    message = _error(maxNodes=2, idleSecondsBeforeScaleDown=300, namePrefix="X")
    assert (
        "phi3-foundry:maxNodes was renamed trainingNodes: training runs on serverless compute"
        in message
    )
    assert "phi3-foundry:idleSecondsBeforeScaleDown is retired: serverless compute has no" in (
        message
    )
    assert "remove it" in message
    assert "phi3-foundry:namePrefix: invalid name prefix" in message


def test_all_problems_are_reported_in_one_error() -> None:
    message = _error(location="mars", namePrefix="X", trainingNodes=-1)
    assert message.count("\n") == 3
    for key in ("azure-native:location", "phi3-foundry:namePrefix", "phi3-foundry:trainingNodes"):
        assert key in message


# ---- training and serving together ----

TRAIN_AND_SERVE = {"stages": ["infra", "train", "serve"], "trainingData": "data.jsonl"}


def test_serve_takes_the_trained_model_without_waiting_for_it() -> None:
    """Submit-and-return: a later `pulumi up` registers and serves the model (program.py)."""
    config = parse_stack_config(_values(**TRAIN_AND_SERVE, waitForTraining="false"))
    assert config.uses(Stage.SERVE) and not config.wait_for_training


def test_a_model_reference_with_train_is_what_is_served() -> None:
    """Rollback is one key: the reference wins over the trained model."""
    reference = "azureml:phi3-ft-0123456789abcdef:1"
    config = parse_stack_config(_values(**TRAIN_AND_SERVE, modelReference=reference))
    assert config.model_name_and_version() == ("phi3-ft-0123456789abcdef", "1")


def test_a_model_reference_without_serve_is_refused() -> None:
    message = _error(
        stages=["infra", "train"], trainingData="d.jsonl", modelReference="azureml:m:1"
    )
    assert "phi3-foundry:modelReference: only used when stages include 'serve'" in message


def test_training_run_is_a_count_from_zero() -> None:
    assert parse_stack_config(_values(trainingRun="2")).training_run == 2
    assert "phi3-foundry:trainingRun: Input should be greater than or equal to 0" in _error(
        trainingRun=-1
    )


# ---- serving hardware: a given server image has CPU-only torch unless serverImageGpu ----
# (the built one follows the serving size: tests/pipeline/test_server_variant.py)


@pytest.mark.parametrize(
    "size", [GPU_SERVING, "Standard_ND96isr_H100_v5", "Standard_NV36ads_A10_v5"]
)
def test_gpu_serving_size_is_refused_with_a_cpu_server_image(size: str) -> None:
    message = _error(
        **SERVE_ONLY,
        servingInstanceType=size,
        imageBuild="prebuilt",
        serverImage="contoso.azurecr.io/phi3-server:1",
    )
    assert f"phi3-foundry:servingInstanceType: {size} is a GPU size" in message
    assert "CPU-only torch" in message
    assert "Standard_E4s_v3" in message and "serverImageGpu true" in message


def test_gpu_serving_size_is_allowed_with_a_gpu_server_image() -> None:
    config = parse_stack_config(
        _values(
            **SERVE_ONLY,
            servingInstanceType=GPU_SERVING,
            imageBuild="prebuilt",
            serverImage="contoso.azurecr.io/phi3-server-cuda:1",
            serverImageGpu="true",
        )
    )
    assert config.server_image_gpu is True


def test_gpu_serving_size_is_not_checked_without_serve() -> None:
    assert parse_stack_config(_values(servingInstanceType=GPU_SERVING)).stages == (Stage.INFRA,)


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # imageBuild remote: the built image is CPU-only
        {"imageBuild": "prebuilt"},  # no serverImage to say it of
    ],
)
def test_server_image_gpu_needs_a_prebuilt_server_image(overrides: dict[str, str]) -> None:
    message = _error(**SERVE_ONLY, serverImageGpu=True, **overrides)
    assert (
        "phi3-foundry:serverImageGpu: only valid with imageBuild 'prebuilt' and a serverImage"
        in (message)
    )
