"""A fake `pulumi` executable that records its calls and answers what the expiry job asks.

The stacks "in the backend" are a JSON file ($FAKE_PULUMI_STATE: {"stacks": {name: {"resourceCount":
n}}, "failDestroy": [names]}); each call is appended to $FAKE_PULUMI_CALLS as a JSON line
{"argv", "cwd"}. Answers are in the Pulumi CLI's formats (pulumi/pulumi, commit 1b5949891b3c):

- `stack ls --json`: pkg/cmd/pulumi/stack/stack_list.go `formatStackSummariesJSON` through
  pkg/cmd/pulumi/ui/json.go `FprintJSON` (two-space indent, trailing newline); the DIY backend
  reports no `updateInProgress` (pkg/backend/diy/backend.go `SupportsProgress` is false) and the
  names without project within the project folder (`diyBackendReference.String`).
- `config get KEY --stack S --json`: pkg/cmd/pulumi/config/config.go `getConfig` (the stack file
  of the working directory, `configValueJSON` through json.MarshalIndent, Fprintln); the value as
  the CLI holds it, read by tests/fakes/pulumi_cli.py (an unquoted date becomes Go's time
  String()); an absent key: "configuration key '%s' not found for stack '%s'" with the key as
  `PrettyKey` prints it (config/io.go: the project's namespace left out).
- a stack the backend lacks: pkg/backend/backenderr/backenderr.go "no stack named '%s' found".
- `destroy` without `--yes` when non-interactive: pkg/cmd/pulumi/operations/destroy.go refuses.
- errors: `error: <message>` on stderr (sdk/go/common/util/cmdutil/exit.go, Diag().Errorf) and a
  non-zero exit (1 here; only non-zero is relied on).

`destroy` prints a short summary; the expiry job does not read it.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

# The fake runs this module with the test's interpreter; the repository root on PYTHONPATH is what
# makes `tests.ci.fake_pulumi` importable from whatever folder the job starts `pulumi` in.
_SCRIPT = """#!/bin/sh
PYTHONPATH={repo} exec {python} -m tests.ci.fake_pulumi "$@"
"""


def install_fake_pulumi(bin_dir: Path, repo_root: Path) -> Path:
    """Write an executable `pulumi` into `bin_dir` (put it first on PATH) and return its path."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    pulumi = bin_dir / "pulumi"
    pulumi.write_text(
        _SCRIPT.format(python=shlex.quote(sys.executable), repo=shlex.quote(str(repo_root)))
    )
    pulumi.chmod(0o755)
    return pulumi


def answer(argv: list[str]) -> int:
    import os

    state_file = Path(os.environ["FAKE_PULUMI_STATE"])
    state = json.loads(state_file.read_text())
    with Path(os.environ["FAKE_PULUMI_CALLS"]).open("a") as calls:
        calls.write(json.dumps({"argv": argv, "cwd": os.getcwd()}) + "\n")
    stacks: dict[str, dict[str, int]] = state["stacks"]

    if argv == ["stack", "ls", "--json"]:
        summaries = [
            {"name": name, "current": False, "resourceCount": info["resourceCount"]}
            for name, info in stacks.items()
        ]
        sys.stdout.write(json.dumps(summaries, indent=2) + "\n")
        return 0
    stack = _flag(argv, "--stack")
    if stack is not None and stack not in stacks:
        return _error(f"no stack named '{stack}' found")
    if argv[:2] == ["config", "get"] and "--json" in argv and stack is not None:
        return _config_get(argv[2], stack)
    if argv[:1] == ["destroy"] and stack is not None:
        if "--yes" not in argv:
            return _error("--yes must be passed in to proceed when running in non-interactive mode")
        if stack in state.get("failDestroy", []):
            return _error(f"update failed: deleting resources of stack '{stack}' failed")
        deleted, stacks[stack]["resourceCount"] = stacks[stack]["resourceCount"], 0
        state_file.write_text(json.dumps(state))
        print(f"Destroying ({stack}):\n\nResources:\n    - {deleted} deleted\n")
        return 0
    sys.stderr.write(f"fake pulumi: no answer for {argv}\n")
    return 2


def _config_get(key: str, stack: str) -> int:
    from tests.fakes.pulumi_cli import load_project, load_stack

    project_dir = Path.cwd()
    project = load_project(project_dir / "Pulumi.yaml")
    stack_file = project_dir / f"Pulumi.{stack}.yaml"
    config = load_stack(stack_file, project) if stack_file.is_file() else {}
    namespace, _, name = key.partition(":")
    if key not in config:
        pretty = name if namespace == project.name else key
        return _error(f"configuration key '{pretty}' not found for stack '{stack}'")
    sys.stdout.write(json.dumps({"value": config[key].text, "secret": False}, indent=2) + "\n")
    return 0


def _flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def _error(message: str) -> int:
    sys.stderr.write(f"error: {message}\n")
    return 1


if __name__ == "__main__":
    sys.exit(answer(sys.argv[1:]))
