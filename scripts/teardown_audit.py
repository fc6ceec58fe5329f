"""After `pulumi destroy`: list anything of a stack still in Azure; exit non-zero if any remains.

    python scripts/teardown_audit.py --stack eastus2 [--subscription ID] [--json]

Computes the stack's Azure names from `Pulumi.<stack>.yaml` (the same code as the program), then
asks ARM for (1) resource groups and resources tagged `stack=<stack>` and `project=phi3-foundry`,
(2) soft-deleted Key Vaults and workspaces holding the stack's names. Signs in like `pulumi up`
(phi3_infra/credentials.py: ARM_* as azure-native, else `az login`).

Exit codes: 0 nothing remains; 1 something remains (listed, with how to remove it); 2 bad
arguments or stack file; 3 could not check (sign-in, permissions, network).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "infra"))

from phi3_infra.arm import (  # noqa: E402
    ArmClient,
    ArmError,
    ArmNotFoundError,
    add_arm_arguments,
    client_from_environment,
)
from phi3_infra.config import ConfigError, config_from_flat  # noqa: E402
from phi3_infra.naming import StackNames, stack_names  # noqa: E402
from phi3_infra.offline import PROJECT, stack_file_config  # noqa: E402
from phi3_infra.preflight import (  # noqa: E402
    KEY_VAULT_API_VERSION,
    ML_API_VERSION,
    PROVIDERS_API_VERSION,
    deleted_vault_blockers,
    deleted_workspace_blockers,
)

EXIT_CLEAN, EXIT_LEFTOVERS, EXIT_USAGE, EXIT_UNCHECKED = 0, 1, 2, 3


@dataclass(frozen=True)
class Leftover:
    kind: str  # resource_group | resource | soft_deleted_key_vault | soft_deleted_workspace
    name: str
    detail: str


def _tag_filter(stack: str) -> dict[str, str]:
    return {"$filter": f"tagName eq 'stack' and tagValue eq '{stack}'"}


def _ours(item: dict[str, Any]) -> bool:
    """The `stack` tag alone could be another project's: the project tag must match too."""
    return (item.get("tags") or {}).get("project") == PROJECT


def audit(client: ArmClient, subscription_id: str, stack: str, names: StackNames) -> list[Leftover]:
    sub = f"/subscriptions/{subscription_id}"
    found = [
        Leftover("resource_group", group["name"], f"az group delete --name {group['name']}")
        for group in client.list_json(
            f"{sub}/resourcegroups", PROVIDERS_API_VERSION, _tag_filter(stack)
        )
        if _ours(group)
    ]
    found += [
        Leftover("resource", resource["name"], f"{resource['type']}: {resource['id']}")
        for resource in client.list_json(
            f"{sub}/resources", PROVIDERS_API_VERSION, _tag_filter(stack)
        )
        if _ours(resource)
    ]
    vaults = client.list_json(
        f"{sub}/providers/Microsoft.KeyVault/deletedVaults", KEY_VAULT_API_VERSION
    )
    found += [
        Leftover(blocker.kind, blocker.name, blocker.advice)
        for blocker in deleted_vault_blockers(vaults, [names.key_vault])
    ]
    try:
        workspaces = list(
            client.list_json(
                f"{sub}/providers/Microsoft.MachineLearningServices/deletedWorkspaces",
                ML_API_VERSION,
            )
        )
    except ArmNotFoundError:  # subscriptions without the type have no soft-deleted workspaces
        workspaces = []
    found += [
        Leftover(blocker.kind, blocker.name, blocker.advice)
        for blocker in deleted_workspace_blockers(workspaces, [names.project, names.hub])
    ]
    return found


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", required=True, help="stack name (reads Pulumi.<stack>.yaml)")
    add_arm_arguments(parser)
    parser.add_argument("--project-dir", type=Path, default=REPO_ROOT, help="folder of Pulumi.yaml")
    parser.add_argument("--json", action="store_true", help="print the leftovers as JSON")
    args = parser.parse_args(argv)
    if not args.subscription:
        parser.error(
            "no subscription: pass --subscription or set AZURE_SUBSCRIPTION_ID "
            "(or ARM_SUBSCRIPTION_ID)"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stack_file = args.project_dir / f"Pulumi.{args.stack}.yaml"
    try:
        config = config_from_flat(stack_file_config(stack_file))
    except (OSError, ValueError, ConfigError) as error:
        print(f"error: {stack_file}: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        names = stack_names(config, PROJECT, args.stack, args.subscription)
    except ValueError as error:  # the names hash the subscription: it must be its GUID
        print(f"error: --subscription: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with client_from_environment(args.arm_endpoint) as client:
            leftovers = audit(client, args.subscription, args.stack, names)
    except ArmError as error:
        print(f"could not check: {error}", file=sys.stderr)
        return EXIT_UNCHECKED
    if args.json:
        print(json.dumps([asdict(item) for item in leftovers], indent=2))
    elif leftovers:
        print(f"stack {args.stack}: {len(leftovers)} thing(s) remain:")
        for item in leftovers:
            print(f"  {item.kind:<24} {item.name:<36} {item.detail}")
    else:
        print(f"stack {args.stack}: nothing remains (no tagged resources, nothing soft-deleted)")
    return EXIT_LEFTOVERS if leftovers else EXIT_CLEAN


if __name__ == "__main__":
    sys.exit(main())
