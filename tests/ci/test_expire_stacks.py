"""The expiry job (scripts/expire_stacks.py) against a fake `pulumi` on PATH that records its
calls, with the real teardown audit against the fake ARM server."""

from __future__ import annotations

import datetime
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from phi3_infra.cli import expire_stacks
from phi3_infra.config import config_from_flat
from phi3_infra.naming import stack_names as azure_names
from phi3_infra.stack_files import PROJECT, stack_file_config
from phi3_infra.tooling.expiry import PulumiCliError, read_expires_on, stack_names
from tests.ci.fake_pulumi import install_fake_pulumi
from tests.fakes.arm_server import FakeArm
from tests.fakes.arm_teardown import TeardownArm

# Both shipped stack files say `expiresOn: 2027-03-31`, unquoted.
LAST_DAY = "2027-03-31"
DAY_AFTER = "2027-04-01"


@dataclass
class Backend:
    """The fake CLI's stacks and call log, a project folder with stack files, and the fake
    ARM's state that the audit reads."""

    project: Path
    arm: TeardownArm
    subscription: str
    state: Path
    calls: Path

    def add_stack(self, name: str, stack_file: str | None = None, resources: int = 12) -> None:
        state = json.loads(self.state.read_text())
        state["stacks"][name] = {"resourceCount": resources}
        self.state.write_text(json.dumps(state))
        if stack_file is not None:
            (self.project / f"Pulumi.{name}.yaml").write_text(stack_file)

    def fail_destroy(self, name: str) -> None:
        state = json.loads(self.state.read_text())
        state["failDestroy"] = [name]
        self.state.write_text(json.dumps(state))

    def destroyed(self) -> list[str]:
        argvs = [json.loads(line)["argv"] for line in self.calls.read_text().splitlines()]
        return [argv[argv.index("--stack") + 1] for argv in argvs if argv[0] == "destroy"]


@pytest.fixture
def backend(
    signed_in_env: FakeArm, repo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Backend:
    """An empty backend; the fake ARM (for the audit) holds nothing of any stack."""
    arm = TeardownArm(signed_in_env).install()
    bin_dir = install_fake_pulumi(tmp_path / "pulumi-bin", repo_root).parent
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(repo_root / "Pulumi.yaml", project)
    state, calls = tmp_path / "state.json", tmp_path / "calls.jsonl"
    state.write_text(json.dumps({"stacks": {}}))
    calls.touch()
    monkeypatch.setenv("FAKE_PULUMI_STATE", str(state))
    monkeypatch.setenv("FAKE_PULUMI_CALLS", str(calls))
    return Backend(project, arm, signed_in_env.subscription_id, state, calls)


def _shipped(repo_root: Path, stack: str, expires_on: str | None = None) -> str:
    text = (repo_root / f"Pulumi.{stack}.yaml").read_text()
    assert f"phi3-foundry:expiresOn: {LAST_DAY}\n" in text
    if expires_on is None:
        return text
    return text.replace(f"expiresOn: {LAST_DAY}", f"expiresOn: {expires_on}")


def _destroy(backend: Backend, *extra: str, today: str = DAY_AFTER) -> int:
    args = ["destroy", "--project-dir", str(backend.project), "--today", today, *extra]
    return expire_stacks.main(args)


def test_destroys_and_audits_only_the_expired_stacks(
    backend: Backend, repo_root: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    backend.add_stack("eastus2", _shipped(repo_root, "eastus2"))  # unquoted date
    backend.add_stack("swedencentral", _shipped(repo_root, "swedencentral", f'"{LAST_DAY}"'))
    backend.add_stack("westus3", _shipped(repo_root, "eastus2", "2027-06-30"))

    assert _destroy(backend) == expire_stacks.EXIT_OK

    assert backend.destroyed() == ["eastus2", "swedencentral"]
    out = capfd.readouterr().out
    # The real audit ran for each destroyed stack, after its destroy, and for no other.
    assert out.count("nothing remains") == 2
    for stack in ("eastus2", "swedencentral"):
        assert out.index(f"Destroying ({stack})") < out.index(f"stack {stack}: nothing remains")
    assert "westus3: live until 2027-06-30" in out
    assert "eastus2: expired: destroyed, and the audit found nothing left" in out


def test_a_stack_lives_through_its_expiry_date(
    backend: Backend, repo_root: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    backend.add_stack("eastus2", _shipped(repo_root, "eastus2"))
    assert _destroy(backend, today=LAST_DAY) == expire_stacks.EXIT_OK
    assert backend.destroyed() == []
    assert f"eastus2: live until {LAST_DAY}" in capfd.readouterr().out


def test_an_unreadable_expiry_is_reported_not_destroyed(
    backend: Backend, repo_root: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    backend.add_stack("alice")  # in the backend, no stack file in the checkout
    backend.add_stack("typo", _shipped(repo_root, "eastus2", "31.03.2027"))
    backend.add_stack("eastus2", _shipped(repo_root, "eastus2"))

    assert _destroy(backend) == expire_stacks.EXIT_UNREADABLE

    assert backend.destroyed() == ["eastus2"]
    err = capfd.readouterr().err
    assert "alice: not destroyed: expiresOn unreadable" in err
    assert "configuration key 'expiresOn' not found for stack 'alice'" in err
    assert "typo: not destroyed: expiresOn unreadable" in err
    assert "'31.03.2027'" in err
    assert "fix: set phi3-foundry:expiresOn (YYYY-MM-DD) in the stack file" in err


def test_a_failed_destroy_is_not_audited_and_leftovers_fail_the_run(
    backend: Backend, repo_root: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    backend.add_stack("eastus2", _shipped(repo_root, "eastus2"))
    backend.add_stack("swedencentral", _shipped(repo_root, "swedencentral"))
    backend.fail_destroy("eastus2")
    # swedencentral's resource group outlived its destroy.
    config = config_from_flat(stack_file_config(backend.project / "Pulumi.swedencentral.yaml"))
    group = azure_names(config, PROJECT, "swedencentral", backend.subscription).resource_group
    backend.arm.add_group(group, tags={"stack": "swedencentral", "project": PROJECT})

    assert _destroy(backend) == expire_stacks.EXIT_NEEDS_PERSON

    captured = capfd.readouterr()
    assert "eastus2: expired: `pulumi destroy` failed" in captured.err
    assert f"resource group {group}" in captured.out  # the audit's listing
    assert "swedencentral: expired: destroyed, but the audit lists leftovers" in captured.err
    assert "stack eastus2" not in captured.out  # no audit of what was not destroyed


def test_only_the_named_stacks(
    backend: Backend, repo_root: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    backend.add_stack("eastus2", _shipped(repo_root, "eastus2"))
    backend.add_stack("swedencentral", _shipped(repo_root, "swedencentral"))
    args = ("--stack", "swedencentral", "--stack", "westus3", "--dry-run")
    assert _destroy(backend, *args) == expire_stacks.EXIT_OK
    assert backend.destroyed() == []
    out = capfd.readouterr().out
    assert "swedencentral: expired: would be destroyed (dry run)" in out
    assert "westus3: not in the backend" in out
    assert "eastus2" not in out


def test_without_the_pulumi_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert expire_stacks.main(["destroy"]) == expire_stacks.EXIT_NO_PULUMI
    assert "the Pulumi CLI (pulumi) is not on PATH" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("today", "code", "said"),
    [
        (LAST_DAY, expire_stacks.EXIT_OK, f"eastus2: live until {LAST_DAY}"),
        (DAY_AFTER, expire_stacks.EXIT_NEEDS_PERSON, f"eastus2: expired on {LAST_DAY}"),
    ],
)
def test_check_guards_a_deploy(
    today: str, code: int, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert expire_stacks.main(["check", "--stack", "eastus2", "--today", today]) == code
    assert said in "".join(capsys.readouterr())


def test_check_names_a_missing_stack_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert expire_stacks.main(["check", "--stack", "nosuch"]) == expire_stacks.EXIT_USAGE
    assert "no stack file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2027-03-31", datetime.date(2027, 3, 31)),  # quoted in the stack file
        ("2027-03-31 00:00:00 +0000 UTC", datetime.date(2027, 3, 31)),  # unquoted, via Go
        ("2027-03-31 10:00:00 +0000 UTC", None),  # a timestamp: the program refuses it too
        ("next year", None),
    ],
)
def test_expires_on_is_read_as_the_program_reads_it(
    value: str, expected: datetime.date | None
) -> None:
    assert read_expires_on("s", value, "here").expires_on == expected


def test_a_stack_list_that_is_not_json_is_an_error() -> None:
    with pytest.raises(PulumiCliError, match="printed no list of stacks"):
        stack_names("Current stack is eastus2")
