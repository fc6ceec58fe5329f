"""Check, before `pulumi up`, whether Azure can run the Phi-3 GPU environment in given regions.

    python scripts/preflight.py --region eastus2 [--region swedencentral ...]
        [--sku Standard_NC24ads_A100_v4 ...] [--nodes 1] [--low-priority]
        [--serving-size Standard_E4s_v3 [--serving-instances 1]] [--json]

Signs in like `pulumi up` does (phi3_infra/azure/credentials.py: azure-native's ARM_* settings, else
`az login`).
Prints the training candidates ranked per region, the serving size's quota (with the 20% reserve
online deployments take) and, for what does not fit, the quota to request or the provider to
register.

Exit codes: 0 every region has a fitting size and nothing blocks; 1 something does not fit or a
name/provider blocks (the output says what to do); 2 bad arguments; 3 could not check: sign-in or
permissions; 4 could not check: Azure unreachable, throttled or failing.
"""

from __future__ import annotations

import argparse
import json
import sys

from phi3_infra.azure.arm import (
    ArmAuthError,
    ArmError,
    add_arm_arguments,
    client_from_environment,
)
from phi3_infra.azure.preflight import PreflightRequest, ServingRequest, run_preflight
from phi3_infra.config import DEFAULT_GPU_SKUS

# 2 is argparse's own exit code for bad arguments.
EXIT_FITS, EXIT_DOES_NOT_FIT, EXIT_AUTH, EXIT_UNREACHABLE = 0, 1, 3, 4


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Quota, VM size, provider and soft-deleted-name preflight for the stack.",
        epilog="Exit codes: 0 fits, 1 does not fit, 2 bad arguments, "
        "3 could not check (sign-in/permissions), 4 could not check (network/Azure).",
    )
    parser.add_argument("--region", action="append", required=True, help="repeat for several")
    parser.add_argument(
        "--sku",
        action="append",
        help=f"candidate VM size, most preferred first; repeatable (default: {DEFAULT_GPU_SKUS})",
    )
    parser.add_argument(
        "--nodes", type=int, default=1, help="instances per training job (default 1)"
    )
    parser.add_argument("--low-priority", action="store_true", help="check low-priority quota")
    parser.add_argument(
        "--serving-size",
        help="also check this managed online deployment size, e.g. Standard_E4s_v3",
    )
    parser.add_argument(
        "--serving-instances", type=int, default=1, help="its instance count (default 1)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_arm_arguments(parser)
    parser.add_argument(
        "--key-vault-name", action="append", default=[], help="a vault name the stack will use"
    )
    parser.add_argument(
        "--workspace-name", action="append", default=[], help="a workspace name the stack will use"
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds per ARM call (default 30)"
    )
    args = parser.parse_args(argv)
    if not args.subscription:
        parser.error(
            "no subscription: pass --subscription or set AZURE_SUBSCRIPTION_ID "
            "(or ARM_SUBSCRIPTION_ID)"
        )
    serving = (
        ServingRequest(args.serving_size, args.serving_instances) if args.serving_size else None
    )
    try:
        args.request = PreflightRequest(
            subscription_id=args.subscription,
            regions=tuple(args.region),
            skus=tuple(args.sku or DEFAULT_GPU_SKUS),
            training_nodes=args.nodes,
            low_priority=args.low_priority,
            serving=serving,
            key_vault_names=tuple(args.key_vault_name),
            workspace_names=tuple(args.workspace_name),
        )
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with client_from_environment(
            args.arm_endpoint, timeout_s=args.timeout, deadline_s=4 * args.timeout
        ) as client:
            report = run_preflight(client, args.request)
    except ArmAuthError as error:
        print(f"could not check (sign-in or permissions): {error}", file=sys.stderr)
        print(
            "Sign in with `az login`, or give the identity Reader on the subscription.",
            file=sys.stderr,
        )
        return EXIT_AUTH
    except ArmError as error:
        print(
            f"could not check (Azure unreachable, throttled or failing): {error}", file=sys.stderr
        )
        return EXIT_UNREACHABLE
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.table())
        for warning in report.warnings:
            print(f"warning: {warning}")
        if not report.fits:
            print()
            print(report.failure_message())
    return EXIT_FITS if report.fits else EXIT_DOES_NOT_FIT


if __name__ == "__main__":
    sys.exit(main())
