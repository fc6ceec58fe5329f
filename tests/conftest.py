"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Nothing in the tests may reach a model hub; fail fast instead of hanging on the closed network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parent.parent
# The fake ARM server's fixtures, for the preflight, pipeline and script tests alike.
pytest_plugins = ["tests.fakes.fixtures"]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session", autouse=True)
def pulumi_cli_merge() -> Iterator[None]:
    """Every offline run of the program starts as `pulumi up` would start it: the stack's config
    merged with Pulumi.yaml's and checked by the Pulumi CLI's rules first (a CliConfigError if the
    CLI would refuse it), and the program handed the merged config (tests/fakes/pulumi_cli.py).
    Session-scoped and autouse, so it is in place before any fixture plans a stack."""
    from phi3_infra.cli import plan
    from phi3_infra.tooling import offline
    from tests.fakes.pulumi_cli import load_project, through_cli

    replay = through_cli(offline.run_offline, load_project(REPO_ROOT / "Pulumi.yaml"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(offline, "run_offline", replay)
        patch.setattr(plan, "run_offline", replay)
        yield


@pytest.fixture(scope="session")
def tiny_phi3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Phi-3 folder (model, tokenizer, stock chat template), built once per run."""
    from phi3_rehearsal.tiny_phi3 import build

    out = tmp_path_factory.mktemp("tiny-phi3")
    return build(out, hidden_size=64, layers=2, heads=4, vocab_size=512, seed=0)


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Types of the resources the offline mocks are asked to create, in the order asked: a
    program that stops early must leave this empty."""
    from pulumi.runtime.mocks import MockResourceArgs

    from phi3_infra.tooling import offline

    types: list[str] = []
    new_resource = offline.AzureMocks.new_resource

    def recording(self: offline.AzureMocks, args: MockResourceArgs) -> Any:
        types.append(args.typ)
        return new_resource(self, args)

    monkeypatch.setattr(offline.AzureMocks, "new_resource", recording)
    return types
