"""After `pulumi destroy`: list anything of a stack still in Azure; exit non-zero if any remains.

    python scripts/teardown_audit.py --stack eastus2 [--subscription ID] [--json]
    python scripts/teardown_audit.py record --stack eastus2 [--subscription ID]
    python scripts/teardown_audit.py --record teardown-records/eastus2.json [--json]

What is the stack's is found by the names the program derives, which hash the subscription, prefix,
stack, region and nameGeneration (phi3_infra/tooling/audit.py): the stack's resource group and what
is in it, and the soft-deleted Key Vault, hub, project and Log Analytics workspace of that group.
Another team's stack of the same name has other names: it is never reported.

`--stack S` derives the names from Pulumi.S.yaml and the subscription and saves them as the
stack's record, teardown-records/S.json (or `--record FILE`). `pulumi stack rm` deletes
Pulumi.S.yaml; the record is then all the audit needs: `--record FILE` alone. `record --stack S`
only writes the record, without calling Azure (run it before `pulumi destroy` in a pipeline that
removes the stack afterwards).

Signs in like `pulumi up` (phi3_infra/azure/credentials.py: ARM_* as azure-native, else `az login`).

Exit codes: 0 nothing remains (`record`: written); 1 something remains (listed, with how to
remove it); 2 bad arguments, stack file or record; 3 could not check (sign-in, permissions,
network).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from phi3_infra.azure.arm import ArmError, add_arm_arguments, client_from_environment
from phi3_infra.config import ConfigError, config_from_flat
from phi3_infra.paths import PROJECT_ROOT
from phi3_infra.stack_files import PROJECT, stack_file_config
from phi3_infra.tooling.audit import AuditRecord, Leftover, RecordError, audit

EXIT_CLEAN, EXIT_LEFTOVERS, EXIT_USAGE, EXIT_UNCHECKED = 0, 1, 2, 3
RECORDS_DIR = "teardown-records"


class UsageError(Exception):
    """A stack file, record or argument the audit cannot use; the message says which and why."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "mode",
        nargs="?",
        choices=("check", "record"),
        default="check",
        help="check (default): audit the stack; record: only write its record",
    )
    parser.add_argument("--stack", help="stack name: its names come from Pulumi.<stack>.yaml")
    parser.add_argument(
        "--record",
        type=Path,
        help=(
            "the stack's record: with --stack, where to write it (default: "
            f"{RECORDS_DIR}/<stack>.json in --project-dir); alone, the record to audit from"
        ),
    )
    add_arm_arguments(parser)
    parser.add_argument(
        "--project-dir", type=Path, default=PROJECT_ROOT, help="folder of Pulumi.yaml"
    )
    parser.add_argument("--json", action="store_true", help="print the leftovers as JSON")
    args = parser.parse_args(argv)
    if not args.stack and (args.mode == "record" or args.record is None):
        parser.error(
            "give --stack S (names from Pulumi.S.yaml), or --record FILE to audit from a record"
        )
    if args.stack and not args.subscription:
        parser.error(
            "no subscription: pass --subscription or set AZURE_SUBSCRIPTION_ID "
            "(or ARM_SUBSCRIPTION_ID)"
        )
    return args


def default_record(project_dir: Path, stack: str) -> Path:
    return project_dir / RECORDS_DIR / f"{stack}.json"


def record_of_stack(args: argparse.Namespace) -> tuple[AuditRecord, Path]:
    """The record derived from the stack file, and where it was written."""
    stack_file = args.project_dir / f"Pulumi.{args.stack}.yaml"
    saved = args.record or default_record(args.project_dir, args.stack)
    if not stack_file.is_file():
        hint = f"; audit from the stack's record: --record {saved}" if saved.is_file() else ""
        raise UsageError(f"{stack_file} not found (`pulumi stack rm` deletes it){hint}")
    try:
        config = config_from_flat(stack_file_config(stack_file))
    except (OSError, ValueError, ConfigError) as error:
        raise UsageError(f"{stack_file}: {error}") from None
    try:
        record = AuditRecord.of_stack(config, PROJECT, args.stack, args.subscription)
    except ValueError as error:  # the names hash the subscription: it must be its GUID
        raise UsageError(f"--subscription: {error}") from None
    try:
        record.write(saved)
    except OSError as error:
        raise UsageError(f"cannot write the record {saved}: {error.strerror}") from None
    return record, saved


def read_record(args: argparse.Namespace) -> AuditRecord:
    try:
        record = AuditRecord.read(args.record)
    except RecordError as error:
        raise UsageError(f"{args.record}: {error}") from None
    if args.subscription and args.subscription.lower() != record.subscription_id:
        print(
            f"note: auditing subscription {record.subscription_id}, the record's, not "
            f"{args.subscription} (--subscription or $AZURE_SUBSCRIPTION_ID)",
            file=sys.stderr,
        )
    return record


def print_leftovers(record: AuditRecord, leftovers: list[Leftover], as_json: bool) -> None:
    group = record.names.resource_group
    if as_json:
        print(json.dumps([asdict(item) for item in leftovers], indent=2))
    elif leftovers:
        print(f"stack {record.stack} (resource group {group}): {len(leftovers)} thing(s) remain:")
        for item in leftovers:
            print(f"  {item.kind:<27} {item.name:<36} {item.detail}")
    else:
        print(
            f"stack {record.stack}: nothing remains (resource group {group} is gone, nothing "
            "soft-deleted holds the stack's names)"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.stack:
            record, saved = record_of_stack(args)
            stream = sys.stdout if args.mode == "record" else sys.stderr
            print(f"record: {saved} (after `pulumi stack rm`: --record {saved})", file=stream)
        else:
            record = read_record(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.mode == "record":
        return EXIT_CLEAN
    try:
        with client_from_environment(args.arm_endpoint) as client:
            leftovers = audit(client, record)
    except ArmError as error:
        print(f"could not check: {error}", file=sys.stderr)
        return EXIT_UNCHECKED
    print_leftovers(record, leftovers, args.json)
    return EXIT_LEFTOVERS if leftovers else EXIT_CLEAN


if __name__ == "__main__":
    sys.exit(main())
