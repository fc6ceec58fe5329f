"""Fixtures for the pipeline tests: build contexts and data the tests may change, the stack
config around them, and the fake ARM server (shared with the preflight tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from phi3_infra import build_context
from phi3_infra.cli.plan import plan_stack
from phi3_infra.tooling.offline import OfflineRun
from tests.fakes.arm_pipeline import PipelineArm
from tests.fakes.arm_server import FakeArm
from tests.fakes.azure_rules import FakeAzure

STACK = "eastus2"
DEMO_DATA = Path(__file__).resolve().parents[2] / "scripts" / "data" / "capitals_chat.jsonl"
BASE_CONFIG = {
    "azure-native:location": "eastus2",
    "phi3-foundry:owner": "team@contoso.com",
    "phi3-foundry:expiresOn": "2027-01-31",
    # The default is infra only: the pipeline tests ask for every stage, as Pulumi.eastus2.yaml.
    "phi3-foundry:stages": '["infra", "train", "serve"]',
}


def write_context(folder: Path, module: str) -> Path:
    """A small build context: Dockerfile, .dockerignore, one package, and ignored clutter."""
    (folder / module).mkdir(parents=True)
    (folder / "Dockerfile").write_text(
        f"FROM python:3.11-slim\nCOPY {module} /app/{module}\nUSER 10001\n"
    )
    (folder / ".dockerignore").write_text(f"*\n!{module}/\n**/__pycache__\n")
    (folder / module / "__init__.py").write_text('"""package"""\n')
    (folder / "notes.txt").write_text("not sent: excluded by .dockerignore\n")
    return folder


Plan = Callable[..., OfflineRun]


def planner(root: Path, monkeypatch: pytest.MonkeyPatch) -> Plan:
    """Plan the whole pipeline offline with build contexts and data under `root`, and send it to
    a fake Azure (a fresh one unless `azure` is given: its state from earlier runs); other keyword
    arguments override config keys (camelCase; None removes one)."""
    contexts = {
        "trainer": write_context(root / "training_image", "phi3_trainer"),
        "server": write_context(root / "serving_image", "phi3_server"),
    }
    monkeypatch.setattr(build_context, "TRAINER_CONTEXT", contexts["trainer"])
    monkeypatch.setattr(build_context, "SERVER_CONTEXT", contexts["server"])
    train_file = root / "train.jsonl"
    # Twenty valid chat records from the demo data set.
    train_file.write_text("".join(DEMO_DATA.read_text().splitlines(keepends=True)[:20]))

    def run(*, azure: FakeAzure | None = None, **overrides: Any) -> OfflineRun:
        config = BASE_CONFIG | {"phi3-foundry:trainingData": str(train_file)}
        for key, value in overrides.items():
            if value is None:
                config.pop(f"phi3-foundry:{key}", None)
            else:
                config[f"phi3-foundry:{key}"] = value
        return (azure or FakeAzure()).apply(plan_stack(config, STACK))

    return run


@pytest.fixture
def plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Plan:
    """A planner whose contexts (tmp_path/training_image, serving_image) and data
    (tmp_path/train.jsonl) a test may change."""
    return planner(tmp_path, monkeypatch)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OfflineRun]:
    """The whole pipeline with default settings, planned once per module (read-only)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield planner(tmp_path_factory.mktemp("pipeline"), monkeypatch)()


@pytest.fixture
def pipeline_arm(
    fake_arm: FakeArm,
    monkeypatch: pytest.MonkeyPatch,
) -> PipelineArm:
    """The fake ARM server with the pipeline routes; plain HTTPS clients (blob and SAS uploads,
    the registry token exchange) trust its CA as they trust Azure's."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake_arm.ca_file))
    return PipelineArm(fake_arm).install()
