"""Offline plan: what `pulumi up` would create for an example stack, without Azure or the CLI.

    python scripts/plan.py                     # every Pulumi.<stack>.yaml at the repo root
    python scripts/plan.py --stack eastus2 --json

Runs the real program (phi3_infra.program.build_stack) under Pulumi's mocks, then prints every
resource with its Azure name, location, key settings (for the pipeline stages: images, data
asset, job command, model, endpoint, deployment limits, and what each ARM-client step acts on),
each role assignment as role -> scope, the outputs (secrets masked) and the security policy
results. The stack's data and build contexts are validated as in `pulumi up`. Exit status 1
when a policy fails, 2 on invalid config or data.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from phi3_infra.build_context import ImageContextError
from phi3_infra.components.rbac import BuiltInRole
from phi3_infra.config import ConfigError
from phi3_infra.paths import PROJECT_ROOT
from phi3_infra.program import (
    build_stack,
    no_existing_training,
    nothing_served,
    offline_gpu_choice,
    offline_registry_token,
)
from phi3_infra.stack_files import stack_file_config
from phi3_infra.tooling.offline import (
    CLIENT_OBJECT_ID,
    OfflineRun,
    PlannedResource,
    input_at,
    run_offline,
)
from phi3_infra.tooling.pricing import estimate_costs
from phi3_infra.training_data import DataError
from phi3_policy import Violation, check_all, validation_args

ROLE_ASSIGNMENT = "azure-native:authorization:RoleAssignment"
DYNAMIC = "pulumi-python:dynamic:Resource"
# Settings worth seeing per type (dotted paths into the inputs); everything else is in --json.
KEY_PROPERTIES: Mapping[str, tuple[str, ...]] = {
    "azure-native:storage:StorageAccount": (
        "kind",
        "sku.name",
        "enableHttpsTrafficOnly",
        "minimumTlsVersion",
        "allowBlobPublicAccess",
        "allowSharedKeyAccess",
        "defaultToOAuthAuthentication",
    ),
    "azure-native:keyvault:Vault": (
        "properties.enableRbacAuthorization",
        "properties.enableSoftDelete",
        "properties.softDeleteRetentionInDays",
        "properties.enablePurgeProtection",
    ),
    "azure-native:containerregistry:Registry": (
        "sku.name",
        "adminUserEnabled",
        "anonymousPullEnabled",
    ),
    "azure-native:operationalinsights:Workspace": ("sku.name", "retentionInDays"),
    "azure-native:applicationinsights:Component": ("ingestionMode", "workspaceResourceId"),
    "azure-native:machinelearningservices:Workspace": (
        "kind",
        "identity.type",
        "systemDatastoresAuthMode",
        "hubResourceId",
        "storageAccount",
        "keyVault",
        "containerRegistry",
        "applicationInsights",
    ),
    "azure-native:storage:BlobContainer": ("publicAccess",),
    "azure-native:machinelearningservices:DataVersion": ("name", "properties.dataUri"),
    "azure-native:machinelearningservices:EnvironmentVersion": (
        "name",
        "properties.image",
        "properties.inferenceConfig.readinessRoute.path",
        "properties.inferenceConfig.scoringRoute.path",
    ),
    "azure-native:machinelearningservices:Job": (
        # Serverless: the size and count (trainingNodes) per job, Spot with lowPriority.
        "properties.resources.instanceType",
        "properties.resources.instanceCount",
        "properties.queueSettings.jobTier",
        "properties.distribution.processCountPerInstance",
        "properties.identity.identityType",
        "properties.command",
    ),
    "azure-native:machinelearningservices:ModelVersion": ("name", "properties.modelUri"),
    "azure-native:machinelearningservices:OnlineEndpoint": (
        "properties.authMode",
        "identity.type",
    ),
    "azure-native:machinelearningservices:OnlineDeployment": (
        "properties.instanceType",
        "sku.capacity",
        "properties.requestSettings.requestTimeout",
        "properties.requestSettings.maxConcurrentRequestsPerInstance",
        "properties.model",
    ),
    # Steps run through the ARM client (pulumi.dynamic): what each one acts on.
    DYNAMIC: (
        "image",
        "url",
        "job_id",
        "timeout_s",
        "deployment_name",
        "deployment_id",
        "key_vault",
        "purge_key_vault",
        "workspaces",
    ),
}


def plan_stack(config: Mapping[str, str], stack: str) -> OfflineRun:
    """Every resource the program registers for this flat config (`namespace:key` -> text)."""
    # Offline there is no Azure to ask: the first candidate size stands in, unchecked, no
    # registry token is fetched, and no training job or served model exists yet.
    return run_offline(
        lambda: build_stack(
            preflight=offline_gpu_choice,
            registry_token=offline_registry_token,
            find_training=no_existing_training,
            find_served=nothing_served,
        ),
        config,
        stack,
    )


def check_policies(run: OfflineRun) -> list[Violation]:
    return check_all(
        validation_args(resource.type, resource.inputs, resource.urn, resource.name)
        for resource in run.resources
    )


def _display(value: Any) -> Any:
    """ARM ids shortened to `storageAccounts/x`; whole numbers without the wire format's `.0`."""
    if isinstance(value, str) and value.startswith("/subscriptions/"):
        return "/".join(value.split("/")[-2:])
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _principals(run: OfflineRun) -> dict[str, str]:
    """principal id -> logical name of the identity or workspace that owns it."""
    owners = {CLIENT_OBJECT_ID: "deployer"}  # whoever runs `pulumi up`
    for resource in run.resources:
        if resource.type == ROLE_ASSIGNMENT:
            continue  # its outputs echo the principal it grants to
        identity = resource.outputs.get("identity") or {}
        for principal in (resource.outputs.get("principalId"), identity.get("principalId")):
            if principal:
                owners[principal] = resource.name
    return owners


def describe(resource: PlannedResource, run: OfflineRun) -> dict[str, Any]:
    """One resource as the plan shows it."""
    by_urn = {item.urn: item.name for item in run.resources}
    entry: dict[str, Any] = {
        "type": resource.type,
        "name": resource.name,
        "azureName": resource.azure_name,
        "parent": by_urn.get(resource.parent_urn),
        "location": resource.inputs.get("location"),
    }
    if resource.type == ROLE_ASSIGNMENT:
        role_guid = str(resource.inputs["roleDefinitionId"]).rsplit("/", 1)[-1]
        entry["role"] = BuiltInRole(role_guid).name
        entry["roleDefinitionId"] = resource.inputs["roleDefinitionId"]
        entry["scope"] = resource.inputs["scope"]
        entry["principal"] = _principals(run).get(resource.inputs["principalId"])
        entry["principalType"] = resource.inputs.get("principalType")
    else:
        entry["properties"] = {
            path: _display(input_at(resource.inputs, path))
            for path in KEY_PROPERTIES.get(resource.type, ())
        }
        entry["tags"] = resource.inputs.get("tags")
    return entry


def _text_line(entry: Mapping[str, Any]) -> str:
    kind = entry["type"].removeprefix("azure-native:")
    head = f"  {kind:<42} {entry['name']:<45} {entry['azureName'] or '':<36}"
    if entry["type"] == ROLE_ASSIGNMENT:
        return (
            f"{head} {entry['role']} -> {_display(entry['scope'])}"
            f" (principal: {entry['principal']}, {entry['principalType']})"
        )
    settings = [f"location={entry['location']}"] if entry["location"] else []
    settings += [
        f"{path.removeprefix('properties.')}={_display(value)}"
        for path, value in (entry.get("properties") or {}).items()
        if value is not None
    ]
    return f"{head} {' '.join(settings)}"


def shown_outputs(run: OfflineRun) -> dict[str, Any]:
    """Outputs as `pulumi stack output` prints them: secrets masked."""
    return {
        key: "[secret]" if key in run.secret_outputs else value
        for key, value in run.outputs.items()
    }


def render_text(stack: str, run: OfflineRun, violations: Sequence[Violation]) -> str:
    entries = [describe(resource, run) for resource in run.resources]
    entries.sort(key=lambda e: (e["parent"] is not None, e["parent"] or "", e["type"], e["name"]))
    lines = [f"stack {stack}: {len(entries)} resources"]
    lines += [_text_line(entry) for entry in entries]
    lines.append("outputs:")
    lines += [f"  {key} = {value}" for key, value in sorted(shown_outputs(run).items())]
    lines.append(f"policies: {'PASS' if not violations else f'{len(violations)} violation(s)'}")
    lines += [f"  [{item.policy}] {item.message}" for item in violations]
    lines.append(estimate_costs(run.resources).render())
    return "\n".join(lines)


def example_stacks() -> list[str]:
    return sorted(path.name.split(".")[1] for path in PROJECT_ROOT.glob("Pulumi.*.yaml"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--stack",
        action="append",
        choices=example_stacks(),
        help="example stack to plan (reads Pulumi.<stack>.yaml); repeatable; default: all",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    report, failed = [], False
    for stack in args.stack or example_stacks():
        path = PROJECT_ROOT / f"Pulumi.{stack}.yaml"
        try:
            run = plan_stack(stack_file_config(path), stack)
        except (ConfigError, DataError, ImageContextError) as error:
            print(f"{path.name}: {error}", file=sys.stderr)
            return 2
        violations = check_policies(run)
        failed |= bool(violations)
        if args.json:
            report.append(
                {
                    "stack": stack,
                    "count": len(run.resources),
                    "resources": [describe(resource, run) for resource in run.resources],
                    "outputs": shown_outputs(run),
                    "policyViolations": [vars(item) for item in violations],
                    "costPerHour": estimate_costs(run.resources).to_json(),
                }
            )
        else:
            print(render_text(stack, run, violations) + "\n")
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
