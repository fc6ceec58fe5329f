"""Which stacks' `expiresOn` has passed, and taking those down: `pulumi destroy`, then the audit.

scripts/expire_stacks.py is the command line on this module; the scheduled CI job runs it
(.github/workflows/expire-stacks.yml). A stack is expired once its `expiresOn` date is before
today (UTC): `expiresOn: 2027-03-31` lives through that day. What the CLI prints is read as the
Pulumi CLI prints it (pulumi/pulumi, commit 1b5949891b3c):

- `pulumi stack ls --json`: a JSON array of `{"name", "current", "lastUpdate", "resourceCount"}`
  (pkg/cmd/pulumi/stack/stack_list.go, stackSummaryJSON); only `name` is used.
- `pulumi config get KEY --stack S --json`: `{"value": "...", "secret": false}`
  (pkg/cmd/pulumi/config/config.go, configValueJSON); a key the stack lacks fails with
  `configuration key 'expiresOn' not found for stack 'S'`.
- An unquoted `expiresOn: 2027-03-31` in the stack file comes back as Go's
  "2027-03-31 00:00:00 +0000 UTC" (see phi3_infra/config.py): both forms are read, by the same
  rule as the program's (config.date_from_go_time, then pydantic's date).

A stack whose `expiresOn` cannot be read is reported, never destroyed.
"""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from phi3_infra.config import NAMESPACE, date_from_go_time
from phi3_infra.stack_files import stack_file_config

EXPIRES_ON_KEY = f"{NAMESPACE}:expiresOn"
_DATE = TypeAdapter(datetime.date)


class PulumiCliError(RuntimeError):
    """The Pulumi CLI is missing, failed, or answered something other than what it prints."""


@dataclass(frozen=True)
class Expiry:
    """A stack's `expiresOn`, or why it could not be read (`expires_on` None)."""

    stack: str
    expires_on: datetime.date | None
    problem: str = ""

    def expired(self, today: datetime.date) -> bool:
        return self.expires_on is not None and self.expires_on < today


def read_expires_on(stack: str, value: object, where: str) -> Expiry:
    """`value` as the program reads `expiresOn`; `where` names its source for the message."""
    try:
        return Expiry(stack, _DATE.validate_python(date_from_go_time(value)))
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"]
        return Expiry(stack, None, f"{where}: {EXPIRES_ON_KEY} {value!r}: {reason} (YYYY-MM-DD)")


def expiry_from_stack_file(stack: str, path: Path) -> Expiry:
    """The `expiresOn` of a `Pulumi.<stack>.yaml`, read as the offline plan reads the file."""
    try:
        value = stack_file_config(path).get(EXPIRES_ON_KEY)
    except (OSError, ValueError) as exc:  # yaml.YAMLError is a ValueError
        return Expiry(stack, None, f"{path.name}: cannot be read: {exc}")
    if value is None:
        return Expiry(stack, None, f"{path.name}: no {EXPIRES_ON_KEY}")
    return read_expires_on(stack, value, path.name)


def stack_names(stack_ls_json: str) -> list[str]:
    """The names in `pulumi stack ls --json`'s answer."""
    try:
        summaries = json.loads(stack_ls_json)
        return [str(summary["name"]) for summary in summaries]
    except (ValueError, TypeError, KeyError) as exc:
        raise PulumiCliError(
            f"`pulumi stack ls --json` printed no list of stacks ({type(exc).__name__}: {exc})"
        ) from None


def expiry_from_config_get(stack: str, answer: subprocess.CompletedProcess[str]) -> Expiry:
    """The `expiresOn` in `pulumi config get <key> --stack <stack> --json`'s answer."""
    command = f"`pulumi config get {EXPIRES_ON_KEY} --stack {stack}`"
    if answer.returncode != 0:
        said = _last_line(answer.stderr) or f"exit {answer.returncode}"
        return Expiry(stack, None, f"{command}: {said} (is Pulumi.{stack}.yaml in the checkout?)")
    try:
        value = json.loads(answer.stdout)["value"]
    except (ValueError, TypeError, KeyError):
        return Expiry(stack, None, f"{command} printed no JSON value: {answer.stdout.strip()!r}")
    return read_expires_on(stack, value, command)


class PulumiCli:
    """The Pulumi CLI, run in the project folder (the folder of Pulumi.yaml)."""

    def __init__(self, project_dir: Path, executable: str = "pulumi") -> None:
        found = shutil.which(executable)
        if found is None:
            raise PulumiCliError(
                f"the Pulumi CLI ({executable}) is not on PATH: install it (CI: pulumi/actions)"
            )
        self.executable = found
        self.project_dir = project_dir

    def _run(self, *args: str, capture: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.executable, *args],
            cwd=self.project_dir,
            capture_output=capture,
            text=True,
            check=False,
        )

    def stacks(self) -> list[str]:
        answer = self._run("stack", "ls", "--json")
        if answer.returncode != 0:
            said = _last_line(answer.stderr) or f"exit {answer.returncode}"
            raise PulumiCliError(f"`pulumi stack ls` failed: {said} (logged in to the backend?)")
        return stack_names(answer.stdout)

    def expiry(self, stack: str) -> Expiry:
        return expiry_from_config_get(
            stack, self._run("config", "get", EXPIRES_ON_KEY, "--stack", stack, "--json")
        )

    def destroy(self, stack: str) -> bool:
        """`pulumi destroy`, its progress shown as it runs (the CI log is the record)."""
        args = ("destroy", "--yes", "--non-interactive", "--stack", stack)
        return self._run(*args, capture=False).returncode == 0


class Outcome(Enum):
    """What became of one stack; `needs_person` fails the run so that someone looks."""

    LIVE = ("live", False)
    NOT_DEPLOYED = ("not in the backend: nothing to destroy", False)
    WOULD_DESTROY = ("expired: would be destroyed (dry run)", False)
    DESTROYED = ("expired: destroyed, and the audit found nothing left", False)
    UNREADABLE = ("not destroyed: expiresOn unreadable", True)
    DESTROY_FAILED = ("expired: `pulumi destroy` failed (its output is above)", True)
    LEFTOVERS = ("expired: destroyed, but the audit lists leftovers (above)", True)
    UNAUDITED = ("expired: destroyed, but the audit could not check (above)", True)

    def __init__(self, text: str, needs_person: bool) -> None:
        self.text = text
        self.needs_person = needs_person


@dataclass(frozen=True)
class StackOutcome:
    expiry: Expiry
    outcome: Outcome

    def line(self) -> str:
        detail = self.outcome.text
        if self.outcome is Outcome.LIVE and self.expiry.expires_on is not None:
            detail = f"live until {self.expiry.expires_on.isoformat()}"
        elif self.expiry.problem:
            detail = f"{detail}: {self.expiry.problem}"
        elif self.expiry.expires_on is not None and self.outcome is not Outcome.LIVE:
            detail = f"{detail} (expiresOn {self.expiry.expires_on.isoformat()})"
        return f"{self.expiry.stack}: {detail}"


# The teardown audit's exit codes (scripts/teardown_audit.py): 0 clean, 1 leftovers.
AUDIT_CLEAN, AUDIT_LEFTOVERS = 0, 1
Audit = Callable[[str], int]  # stack -> the audit's exit code


def take_down_expired(
    pulumi: PulumiCli,
    audit: Audit,
    today: datetime.date,
    only: Iterable[str] = (),
    dry_run: bool = False,
) -> list[StackOutcome]:
    """Destroy, then audit, every stack of the backend (or of `only`) whose expiresOn has
    passed; one failure does not stop the others."""
    deployed = pulumi.stacks()
    wanted = list(dict.fromkeys(only)) or deployed
    outcomes = []
    for stack in wanted:
        if stack not in deployed:
            outcomes.append(StackOutcome(Expiry(stack, None), Outcome.NOT_DEPLOYED))
            continue
        expiry = pulumi.expiry(stack)
        outcomes.append(StackOutcome(expiry, _take_down(pulumi, audit, expiry, today, dry_run)))
    return outcomes


def _take_down(
    pulumi: PulumiCli, audit: Audit, expiry: Expiry, today: datetime.date, dry_run: bool
) -> Outcome:
    if expiry.expires_on is None:
        return Outcome.UNREADABLE
    if not expiry.expired(today):
        return Outcome.LIVE
    if dry_run:
        return Outcome.WOULD_DESTROY
    if not pulumi.destroy(expiry.stack):
        return Outcome.DESTROY_FAILED
    audited = audit(expiry.stack)
    if audited == AUDIT_CLEAN:
        return Outcome.DESTROYED
    return Outcome.LEFTOVERS if audited == AUDIT_LEFTOVERS else Outcome.UNAUDITED


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
