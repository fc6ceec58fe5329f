"""The user CLIs around `pulumi up` / `pulumi destroy`: the smoke test against a real local
server, and the teardown audit against the fake ARM server."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from phi3_infra.azure.purge import LogAnalyticsTargets
from phi3_infra.cli import smoke_test, teardown_audit
from phi3_infra.config import config_from_flat
from phi3_infra.naming import StackNames, stack_names
from phi3_infra.stack_files import PROJECT, stack_file_config
from phi3_infra.steps import teardown
from phi3_infra.steps.teardown import _LogAnalyticsDeleteProvider
from tests.fakes.arm_server import FakeArm
from tests.fakes.arm_teardown import TeardownArm
from tests.fakes.clock import fake_poll
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
    azure: TeardownArm
    args: list[str]  # the CLI's arguments for the eastus2 example stack
    names: StackNames
    stack_file: Path


TAGS = {"stack": "eastus2", "project": PROJECT}


def _leave(azure: TeardownArm, names: StackNames) -> None:
    """What a stack with `names` leaves when its destroy cleaned nothing up: its group with a
    resource in it, and its vault, hub and Log Analytics workspace soft-deleted."""
    group = names.resource_group
    azure.add_group(group, tags=TAGS)
    azure.add_resource(group, "Microsoft.Storage/storageAccounts", names.storage_account, TAGS)
    azure.fake.soft_delete_vault(names.key_vault, "eastus2", resource_group=group)
    azure.fake.soft_delete_workspace(names.hub, group, "eastus2")
    azure.soft_delete_log_analytics(names.log_analytics, group)


@pytest.fixture
def audit(signed_in_env: FakeArm, repo_root: Path, tmp_path: Path) -> Audit:
    """The fake ARM after a clean destroy of the eastus2 example stack (its stack file copied to
    a project folder of the test's), next to everything of a colleague's eastus2 stack: the same
    stack and project tags, another nameGeneration, so other names."""
    stack_file = tmp_path / "project" / "Pulumi.eastus2.yaml"
    stack_file.parent.mkdir()
    shutil.copy(repo_root / "Pulumi.eastus2.yaml", stack_file)
    config = config_from_flat(stack_file_config(stack_file))
    subscription = signed_in_env.subscription_id
    azure = TeardownArm(signed_in_env).install()
    theirs = config.model_copy(update={"name_generation": config.name_generation + 1})
    _leave(azure, stack_names(theirs, PROJECT, "eastus2", subscription))
    args = ["--stack", "eastus2", "--subscription", subscription]
    args += ["--project-dir", str(stack_file.parent)]
    names = stack_names(config, PROJECT, "eastus2", subscription)
    return Audit(azure, args, names, stack_file)


def _found(out: str) -> dict[tuple[str, str], str]:
    return {(item["kind"], item["name"]): item["detail"] for item in json.loads(out)}


def test_audit_ignores_another_owners_stack_of_the_same_name(
    audit: Audit, capsys: pytest.CaptureFixture[str]
) -> None:
    assert teardown_audit.main(audit.args) == teardown_audit.EXIT_CLEAN
    assert capsys.readouterr().out.startswith("stack eastus2: nothing remains")


def test_audit_lists_what_remains_and_how_to_remove_it(
    audit: Audit, capsys: pytest.CaptureFixture[str]
) -> None:
    _leave(audit.azure, audit.names)
    assert teardown_audit.main([*audit.args, "--json"]) == teardown_audit.EXIT_LEFTOVERS
    found = _found(capsys.readouterr().out)
    group, logs = audit.names.resource_group, audit.names.log_analytics
    assert set(found) == {
        ("resource_group", group),
        ("resource", audit.names.storage_account),
        ("soft_deleted_key_vault", audit.names.key_vault),
        ("soft_deleted_workspace", audit.names.hub),
        ("soft_deleted_log_analytics", logs),
    }
    assert found[("resource_group", group)] == f"az group delete --name {group} --yes"
    where = f"--resource-group {group} --workspace-name {logs}"
    assert (
        f"az monitor log-analytics workspace recover {where}"
        in found[("soft_deleted_log_analytics", logs)]
    )


def test_audit_runs_from_its_record_after_the_stack_is_removed(
    audit: Audit, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pipeline's order: record, `pulumi destroy`, `pulumi stack rm` (which deletes the stack
    file), then the audit from the record alone."""
    fake = audit.azure.fake
    calls = len(fake.calls)
    assert teardown_audit.main(["record", *audit.args]) == teardown_audit.EXIT_CLEAN
    record = audit.stack_file.parent / "teardown-records" / "eastus2.json"
    assert capsys.readouterr().out.startswith(f"record: {record} ")
    assert len(fake.calls) == calls  # writing the record asks Azure nothing
    audit.stack_file.unlink()
    _leave(audit.azure, audit.names)  # a destroy that stopped half-way
    assert teardown_audit.main(audit.args) == teardown_audit.EXIT_USAGE
    assert capsys.readouterr().err.endswith(f"audit from the stack's record: --record {record}\n")
    assert teardown_audit.main(["--record", str(record), "--json"]) == teardown_audit.EXIT_LEFTOVERS
    assert {kind for kind, _ in _found(capsys.readouterr().out)} == {
        "resource_group", "resource", "soft_deleted_key_vault", "soft_deleted_workspace",
        "soft_deleted_log_analytics",
    }  # fmt: skip


def test_a_file_that_is_no_record_is_refused_saying_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = tmp_path / "eastus2.json"
    wrong.write_text(json.dumps({"stack": "eastus2"}))
    assert teardown_audit.main(["--record", str(wrong)]) == teardown_audit.EXIT_USAGE
    assert capsys.readouterr().err.startswith(f"error: {wrong}: not a teardown record")


@pytest.mark.parametrize("deleted_for_good", [True, False])
def test_after_destroy_the_audit_finds_log_analytics_unless_deleted_for_good(
    audit: Audit,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    deleted_for_good: bool,
) -> None:
    """The destroy's last steps: the workspace's delete, then the group's, which soft-deletes a
    workspace still in it as a delete without force does (delete-workspace.md)."""
    group, logs = audit.names.resource_group, audit.names.log_analytics
    audit.azure.add_log_analytics(logs, group)
    if deleted_for_good:
        monkeypatch.setattr(teardown, "LOG_ANALYTICS_DELETE_POLL", fake_poll()[0])
        targets = LogAnalyticsTargets(audit.azure.fake.subscription_id, group, "eastus2", logs)
        _LogAnalyticsDeleteProvider().delete("log-analytics-x", vars(targets))
    audit.azure.delete_group(group)
    code = teardown_audit.main([*audit.args, "--json"])
    leftovers = _found(capsys.readouterr().out)
    if deleted_for_good:
        assert (code, leftovers) == (teardown_audit.EXIT_CLEAN, {})
    else:
        assert code == teardown_audit.EXIT_LEFTOVERS
        assert set(leftovers) == {("soft_deleted_log_analytics", logs)}


def test_audit_that_cannot_sign_in_says_so(
    audit: Audit, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_AZ_LOGGED_OUT", "1")
    assert teardown_audit.main(audit.args) == teardown_audit.EXIT_UNCHECKED
    assert "could not check" in capsys.readouterr().err
