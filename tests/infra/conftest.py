"""Offline runs of the real program, shared by the infra tests (each run takes well under 1 s).

These tests cover the infrastructure stage: each example stack is planned with `stages: [infra]`
(the pipeline stages are tested in tests/pipeline).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from phi3_infra.cli.plan import plan_stack
from phi3_infra.tooling.offline import OfflineRun
from tests.fakes.azure_rules import FakeAzure
from tests.fakes.pulumi_cli import load_project, load_stack, program_config

EXAMPLE_STACKS = ("eastus2", "swedencentral")
# Keys only the train and serve stages read.
PIPELINE_KEYS = ("trainingData", "validationData", "trainerArgs", "baseModel")


def infra_only(config: dict[str, str]) -> dict[str, str]:
    kept = {k: v for k, v in config.items() if k.split(":", 1)[1] not in PIPELINE_KEYS}
    return kept | {"phi3-foundry:stages": '["infra"]'}


def plan_in_azure(config: dict[str, str], stack: str) -> OfflineRun:
    """The stack's plan, sent to a fresh fake Azure that applies Azure's rules."""
    return FakeAzure().apply(plan_stack(config, stack))


@pytest.fixture(scope="session")
def example_config(repo_root: Path) -> Callable[[str], dict[str, str]]:
    """Flat config of an example stack's infrastructure stage, as the CLI reads the stack file."""
    project = load_project(repo_root / "Pulumi.yaml")

    def config(stack: str) -> dict[str, str]:
        return infra_only(program_config(load_stack(repo_root / f"Pulumi.{stack}.yaml", project)))

    return config


@pytest.fixture(scope="session")
def example_runs(example_config: Callable[[str], dict[str, str]]) -> dict[str, OfflineRun]:
    """Both example stacks, planned once per session."""
    return {stack: plan_in_azure(example_config(stack), stack) for stack in EXAMPLE_STACKS}


@pytest.fixture(scope="session")
def eastus2(example_runs: dict[str, OfflineRun]) -> OfflineRun:
    return example_runs["eastus2"]
