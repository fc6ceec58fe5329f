"""The replay of the Pulumi CLI's config merge (tests/fakes/pulumi_cli.py) answers as the CLI does.

The cases and expected messages are pulumi/pulumi's own tests of the ported functions:
pkg/workspace/config_project_test.go (the merge and type check) and
sdk/go/common/workspace/project_test.go (Pulumi.yaml validation), commit 1b5949891b3c; the
stack-file values follow sdk/go/common/workspace/loaders_test.go and gopkg.in/yaml.v3.
"""

from __future__ import annotations

import pytest

from tests.fakes.pulumi_cli import (
    CliConfigError,
    apply_project_config,
    parse_project,
    parse_stack,
    program_config,
)

PROJECT_HEAD = "name: test\nruntime: dotnet\n"


def merged(project_yaml: str, stack_yaml: str, stack: str = "dev") -> dict[str, str]:
    project = parse_project(PROJECT_HEAD + project_yaml)
    return program_config(apply_project_config(project, stack, parse_stack(stack_yaml, project)))


def refusal(project_yaml: str, stack_yaml: str = "") -> str:
    with pytest.raises(CliConfigError) as caught:
        merged(project_yaml, stack_yaml)
    return str(caught.value)


def project_refusal(project_yaml: str) -> str:
    with pytest.raises(CliConfigError) as caught:
        parse_project(PROJECT_HEAD + project_yaml)
    return str(caught.value)


TWO_REQUIRED = """
config:
  another:
    type: string
  values:
    type: array
    items:
      type: string
"""
THREE_REQUIRED = """
config:
  hello:
    type: integer
  values:
    type: array
    items:
      type: string
  world:
    type: string
"""


@pytest.mark.parametrize(
    ("project_yaml", "expected"),
    [
        (TWO_REQUIRED, "Stack 'dev' is missing configuration values 'another' and 'values'"),
        (
            THREE_REQUIRED,
            "Stack 'dev' is missing configuration values 'hello', 'values' and 'world'",
        ),
        (
            "config:\n  owner:\n    type: string\n",
            "Stack 'dev' is missing configuration value 'owner'",
        ),
        # Declared without a type, still required: pulumi/pulumi#21797.
        (
            "config:\n  note:\n    description: x\n",
            "Stack 'dev' is missing configuration value 'note'",
        ),
    ],
)
def test_a_project_key_without_default_or_value_is_required(
    project_yaml: str, expected: str
) -> None:
    assert refusal(project_yaml) == f"validating stack config: {expected}"


def test_a_default_or_a_value_makes_a_key_optional_and_reaches_the_program() -> None:
    config = merged(
        "config:\n  instanceSize:\n    default: t3.micro\n  region:\n    value: us-west-1\n",
        "config:\n  aws:answer: 42\n",
    )
    assert config == {
        "test:instanceSize": "t3.micro",
        "test:region": "us-west-1",
        "aws:answer": "42",
    }


def test_stack_values_win_and_untyped_keys_take_anything() -> None:
    config = merged(
        "config:\n  instanceSize: t3.micro\n  aws:region: us-west-1\n",
        "config:\n  instanceSize: 9999\n  aws:region: 42\n",
    )
    assert config == {"test:instanceSize": "9999", "aws:region": "42"}


def test_object_values_reach_the_program_as_json() -> None:
    config = merged(
        "config:\n  instanceSize:\n    value:\n      hello: world\n"
        "  aws:config:\n    value:\n      region: us-west-1\n",
        "config:\n  aws:whatever: 42\n",
    )
    assert config["test:instanceSize"] == '{"hello":"world"}'
    assert config["aws:config"] == '{"region":"us-west-1"}'


def test_stack_keys_the_project_does_not_declare_pass() -> None:
    assert merged("", "config:\n  hello: 21\n  world: 42\n") == {
        "test:hello": "21",
        "test:world": "42",
    }


@pytest.mark.parametrize(
    ("project_yaml", "stack_yaml", "expected"),
    [
        (
            "config:\n  values:\n    type: array\n    items:\n      type: string\n"
            "    default: [value]\n",
            "config:\n  test:values: someValue\n",
            "Stack 'dev' with configuration key 'values' must be of type 'array<string>'",
        ),
        (
            "config:\n  importantNumber:\n    type: integer\n",
            "config:\n  test:importantNumber: hello\n",
            "Stack 'dev' with configuration key 'importantNumber' must be of type 'integer'",
        ),
        # ValidateConfigValue: booleans are the literals true/false only; yes is a string in
        # YAML 1.2 (yaml.v3).
        (
            "config:\n  flag:\n    type: boolean\n",
            "config:\n  flag: yes\n",
            "Stack 'dev' with configuration key 'flag' must be of type 'boolean'",
        ),
        # Keys are checked one at a time in sorted order: the first mismatch is the error.
        (
            "config:\n  b:\n    type: integer\n  a:\n    type: boolean\n",
            "config:\n  a: maybe\n  b: many\n",
            "Stack 'dev' with configuration key 'a' must be of type 'boolean'",
        ),
    ],
)
def test_typed_keys_are_checked(project_yaml: str, stack_yaml: str, expected: str) -> None:
    assert refusal(project_yaml, stack_yaml) == f"validating stack config: {expected}"


def test_integers_accept_whole_numbers_and_their_text() -> None:
    project = "config:\n  n:\n    type: integer\n  items:\n    type: array\n    items:\n"
    project += "      type: integer\n"
    config = merged(project, "config:\n  n: 20\n  items: [1, 2.0, '3']\n")
    assert config == {"test:n": "20", "test:items": '[1,2,"3"]'}


@pytest.mark.parametrize(
    ("project_yaml", "expected"),
    [
        (
            "config:\n  instanceSize:\n    type: integer\n    default: hello\n",
            "The default value specified for configuration key 'instanceSize' is not of the "
            "expected type 'integer'",
        ),
        (
            "config:\n  values:\n    type: array\n    items:\n      type: array\n      items:\n"
            "        type: string\n    default: [hello]\n",
            "The default value specified for configuration key 'values' is not of the expected "
            "type 'array<array<string>>'",
        ),
        (
            "config:\n  aws:region:\n    type: string\n    value:\n      region: us-west-1\n",
            "Configuration key 'aws:region' is not namespaced by the project and should not "
            "define a type",
        ),
        (
            "config:\n  instanceSize:\n    type: string\n    default: t3.micro\n"
            "    value: t4.large\n",
            "project config 'instanceSize' cannot have both a 'default' and 'value' attribute",
        ),
        (
            "config:\n  instanceSize:\n    type: array\n    default: [t3.micro, t4.large]\n",
            "The configuration key 'instanceSize' declares an array but does not specify the "
            "underlying type via the 'items' attribute",
        ),
        (
            "config:\n  aws:region:\n    default: us-west-1\n",
            "Configuration key 'aws:region' is not namespaced by the project and should not "
            "define a default value. Did you mean to use the 'value' attribute instead of "
            "'default'?",
        ),
    ],
)
def test_pulumi_yaml_is_validated_as_the_cli_does(project_yaml: str, expected: str) -> None:
    assert project_refusal(project_yaml) == expected


@pytest.mark.parametrize(
    ("yaml_value", "program_reads"),
    [
        # yaml.v3 decodes an unquoted date as a time.Time; object.go keeps its String().
        ("2027-03-31", "2027-03-31 00:00:00 +0000 UTC"),
        ("'2027-03-31'", "2027-03-31"),
        ("yes", "yes"),
        ("True", "true"),
        ("0x1F", "31"),
        ("2.0", "2"),
        ("0.0002", "0.0002"),
        ("", ""),  # null: the empty string (loaders_test.go, TestEmptyValueWarning)
        ("[b, 1]", '["b",1]'),
    ],
)
def test_stack_file_values_reach_the_program_as_the_cli_reads_them(
    yaml_value: str, program_reads: str
) -> None:
    project = parse_project(PROJECT_HEAD)
    assert program_config(parse_stack(f"config:\n  key: {yaml_value}\n", project)) == {
        "test:key": program_reads
    }
