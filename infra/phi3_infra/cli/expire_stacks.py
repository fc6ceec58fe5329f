"""Destroy the stacks whose `expiresOn` has passed, then audit each; or check one before `up`.

    python scripts/expire_stacks.py destroy [--stack S ...] [--today YYYY-MM-DD] [--dry-run]
    python scripts/expire_stacks.py check --stack S [--today YYYY-MM-DD]

`destroy` asks the Pulumi CLI (logged in to the stacks' backend) for the stacks
(`pulumi stack ls`, or only those given with --stack) and each one's expiresOn
(`pulumi config get`); for each expired one it runs `pulumi destroy --yes`, then the teardown
audit (`python -m phi3_infra.cli.teardown_audit --stack S`). A stack whose expiresOn cannot be
read is reported and left alone. `check` reads `Pulumi.<S>.yaml` and fails for an expired stack,
so that CI does not `pulumi up` again what the expiry job took down. A stack is expired once its
expiresOn is before today in UTC (phi3_infra/tooling/expiry.py). Signs in as `pulumi` and the
audit do (infra/README.md, "CI/CD").

Exit codes: 0 nothing needs a person (expired stacks destroyed and audited clean; `check`: the
stack is live); 1 a destroy failed or an audit found leftovers or could not check (`check`: the
stack is expired); 2 bad arguments or no such stack file; 3 the Pulumi CLI is missing or could
not list the stacks; 4 a stack's expiresOn is unreadable (named, with the fix), nothing else wrong.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import subprocess
import sys
from pathlib import Path

from phi3_infra.paths import PROJECT_ROOT
from phi3_infra.tooling.expiry import (
    Outcome,
    PulumiCli,
    PulumiCliError,
    StackOutcome,
    expiry_from_stack_file,
    take_down_expired,
)

EXIT_OK, EXIT_NEEDS_PERSON, EXIT_USAGE, EXIT_NO_PULUMI, EXIT_UNREADABLE = 0, 1, 2, 3, 4
_TEARDOWN_FAILURES = {Outcome.DESTROY_FAILED, Outcome.LEFTOVERS, Outcome.UNAUDITED}


class UsageError(Exception):
    pass


def _date(text: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--today",
        type=_date,
        default=datetime.datetime.now(datetime.UTC).date(),
        help="the date to compare expiresOn with (default: today in UTC)",
    )
    common.add_argument(
        "--project-dir",
        type=Path,
        default=PROJECT_ROOT,
        help="the folder of Pulumi.yaml and the stack files (default: this repository)",
    )
    destroy = commands.add_parser(
        "destroy", parents=[common], help="destroy and audit the expired stacks"
    )
    destroy.add_argument(
        "--stack",
        action="append",
        default=[],
        help="only this stack (repeatable; default: every stack `pulumi stack ls` lists)",
    )
    destroy.add_argument(
        "--dry-run", action="store_true", help="list what would be destroyed, destroy nothing"
    )
    check = commands.add_parser(
        "check", parents=[common], help="fail if the stack file's expiresOn has passed"
    )
    check.add_argument("--stack", required=True, help="the stack (reads Pulumi.<stack>.yaml)")
    return parser


def run_teardown_audit(project_dir: Path, stack: str) -> int:
    """The teardown audit (phi3_infra.cli.teardown_audit) for one stack, its report printed as it
    comes. The stack is kept (no `pulumi stack rm`), so the audit derives the names from its stack
    file; it also saves them as the stack's record (teardown-records/<stack>.json in the project
    folder)."""
    command = [sys.executable, "-m", "phi3_infra.cli.teardown_audit", "--stack", stack]
    command += ["--project-dir", str(project_dir)]
    return subprocess.run(command, check=False).returncode


def _report(outcomes: list[StackOutcome]) -> int:
    for item in outcomes:
        print(item.line(), file=sys.stderr if item.outcome.needs_person else sys.stdout)
    found = {item.outcome for item in outcomes}
    if found & _TEARDOWN_FAILURES:
        return EXIT_NEEDS_PERSON
    if Outcome.UNREADABLE in found:
        print(
            "fix: set phi3-foundry:expiresOn (YYYY-MM-DD) in the stack file and commit it, or "
            "remove a stack nobody owns (`pulumi stack rm`)",
            file=sys.stderr,
        )
        return EXIT_UNREADABLE
    return EXIT_OK


def destroy(args: argparse.Namespace) -> int:
    project_dir = _project_dir(args)
    audit = functools.partial(run_teardown_audit, project_dir)
    outcomes = take_down_expired(
        PulumiCli(project_dir), audit, args.today, only=args.stack, dry_run=args.dry_run
    )
    if not outcomes:
        print("no stacks in the backend")
    return _report(outcomes)


def check(args: argparse.Namespace) -> int:
    stack_file = _project_dir(args) / f"Pulumi.{args.stack}.yaml"
    if not stack_file.is_file():
        raise UsageError(f"no stack file {stack_file} for stack {args.stack!r}")
    expiry = expiry_from_stack_file(args.stack, stack_file)
    if expiry.expires_on is None:
        print(f"{args.stack}: {expiry.problem}", file=sys.stderr)
        return EXIT_UNREADABLE
    if expiry.expired(args.today):
        print(
            f"{args.stack}: expired on {expiry.expires_on.isoformat()} ({stack_file.name}), so "
            "it is not deployed again: extend phi3-foundry:expiresOn, or delete the stack file "
            "once the expiry job has destroyed the stack",
            file=sys.stderr,
        )
        return EXIT_NEEDS_PERSON
    print(f"{args.stack}: live until {expiry.expires_on.isoformat()}")
    return EXIT_OK


def _project_dir(args: argparse.Namespace) -> Path:
    project_dir: Path = args.project_dir
    if not (project_dir / "Pulumi.yaml").is_file():
        raise UsageError(f"--project-dir {project_dir}: no Pulumi.yaml there")
    return project_dir


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return destroy(args) if args.command == "destroy" else check(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PulumiCliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NO_PULUMI


if __name__ == "__main__":
    sys.exit(main())
