"""The user CLIs around `pulumi up` / `pulumi destroy`: the smoke test against a real local
server, and the teardown audit against the fake ARM server."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from phi3_infra.config import config_from_flat
from phi3_infra.naming import StackNames, stack_names
from phi3_infra.offline import PROJECT, stack_file_config
from scripts import smoke_test, teardown_audit
from tests.fakes.arm_pipeline import PipelineArm
from tests.fakes.arm_server import FakeArm
from tests.serving.server_process import RunningServer, serve

API_KEY = "endpoint-key-for-tests"


@pytest.fixture(scope="module")
def server(tiny_phi3: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The real server with the tiny model, requiring a key like a key-auth endpoint."""
    env = {"PHI3_SERVER_API_KEY": API_KEY}
    with serve(tmp_path_factory.mktemp("server"), "--model-dir", str(tiny_phi3), env=env) as run:
        yield run


def _outputs_file(tmp_path: Path, server: RunningServer, **extra: str) -> Path:
    outputs = {"openAiBaseUrl": f"{server.url}/v1", "endpointAuthMode": "key"} | extra
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs))
    return path


@pytest.mark.slow
def test_smoke_test_chats_through_the_openai_client(
    server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outputs = _outputs_file(tmp_path, server, primaryKey=API_KEY)
    assert smoke_test.main(["--outputs", str(outputs), "--max-tokens", "8"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"OK {server.url}/v1 answered in ")
    assert API_KEY not in out


@pytest.mark.slow
def test_smoke_test_reads_pulumi_stack_output(
    server: RunningServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--stack` asks the Pulumi CLI; a stand-in `pulumi` prints what the real one would."""
    outputs = _outputs_file(tmp_path, server, primaryKey=API_KEY)
    fake_pulumi = tmp_path / "bin" / "pulumi"
    fake_pulumi.parent.mkdir()
    fake_pulumi.write_text(
        "#!/bin/sh\n"
        f'[ "$*" = "stack output --json --show-secrets --stack eastus2" ] || exit 3\n'
        f"cat {outputs}\n"
    )
    fake_pulumi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_pulumi.parent}{os.pathsep}{os.environ['PATH']}")
    assert smoke_test.main(["--stack", "eastus2", "--max-tokens", "4"]) == 0
    assert "answered" in capsys.readouterr().out


@pytest.mark.slow
def test_smoke_test_fails_on_a_wrong_key(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code = smoke_test.main(["--base-url", f"{server.url}/v1", "--api-key", "wrong"])
    assert code == smoke_test.EXIT_FAILED
    assert "AuthenticationError" in capsys.readouterr().err


@pytest.mark.slow
def test_smoke_test_points_to_the_routing_note_on_404(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A base URL whose /v1 routes are not passed through (as a gateway might do)."""
    code = smoke_test.main(["--base-url", f"{server.url}/nowhere/v1", "--api-key", API_KEY])
    assert code == smoke_test.EXIT_FAILED
    assert "hint: the endpoint may not pass /v1 through" in capsys.readouterr().err


def test_smoke_test_explains_missing_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    infra_only = tmp_path / "outputs.json"
    infra_only.write_text(json.dumps({"location": "eastus2"}))
    assert smoke_test.main(["--outputs", str(infra_only)]) == smoke_test.EXIT_USAGE
    assert "is 'serve' in phi3-foundry:stages" in capsys.readouterr().err
    monkeypatch.setenv("PATH", str(tmp_path))  # no pulumi here
    assert smoke_test.main(["--stack", "eastus2"]) == smoke_test.EXIT_USAGE
    assert "the Pulumi CLI is not on PATH" in capsys.readouterr().err


@dataclass(frozen=True)
class Audit:
    pipeline: PipelineArm
    args: list[str]  # the CLI's arguments for the eastus2 example stack
    names: StackNames


@pytest.fixture
def audit(signed_in_env: FakeArm, repo_root: Path) -> Audit:
    """The fake ARM after a clean destroy, with things that are not this stack's."""
    config = config_from_flat(stack_file_config(repo_root / "Pulumi.eastus2.yaml"))
    pipeline = PipelineArm(signed_in_env).install()
    # Another project's stack of the same name, and this project's other stack: not ours.
    pipeline.resources.append(
        {"id": "/x/other", "name": "other", "type": "T", "tags": {"stack": "eastus2"}}
    )
    pipeline.groups.append(
        {"id": "/rg2", "name": "rg2", "tags": {"stack": "swedencentral", "project": PROJECT}}
    )
    args = ["--stack", "eastus2", "--subscription", signed_in_env.subscription_id]
    names = stack_names(config, PROJECT, "eastus2", signed_in_env.subscription_id)
    return Audit(pipeline, args, names)


def test_audit_passes_when_nothing_remains(
    audit: Audit, capsys: pytest.CaptureFixture[str]
) -> None:
    assert teardown_audit.main(audit.args) == teardown_audit.EXIT_CLEAN
    assert "stack eastus2: nothing remains" in capsys.readouterr().out


def test_audit_lists_what_remains_and_fails(
    audit: Audit, capsys: pytest.CaptureFixture[str]
) -> None:
    tags = {"stack": "eastus2", "project": PROJECT}
    audit.pipeline.groups.append({"id": "/rg", "name": "rg-phi3-eastus2-x", "tags": tags})
    endpoint = "/subscriptions/s/.../onlineEndpoints/ep-phi3-x"
    audit.pipeline.resources.append(
        {"id": endpoint, "name": "ep-phi3-x", "type": "onlineEndpoints", "tags": tags}
    )
    fake = audit.pipeline.fake
    fake.soft_delete_vault(audit.names.key_vault, "eastus2")
    fake.soft_delete_workspace(audit.names.hub, "rg-phi3-eastus2-x", "eastus2")
    assert teardown_audit.main([*audit.args, "--json"]) == teardown_audit.EXIT_LEFTOVERS
    leftovers = {(item["kind"], item["name"]) for item in json.loads(capsys.readouterr().out)}
    assert leftovers == {
        ("resource_group", "rg-phi3-eastus2-x"),
        ("resource", "ep-phi3-x"),
        ("soft_deleted_key_vault", audit.names.key_vault),
        ("soft_deleted_workspace", audit.names.hub),
    }


def test_audit_that_cannot_sign_in_says_so(
    audit: Audit, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_AZ_LOGGED_OUT", "1")
    assert teardown_audit.main(audit.args) == teardown_audit.EXIT_UNCHECKED
    assert "could not check" in capsys.readouterr().err
