"""What of one stack is still in Azure after `pulumi destroy`, told apart from every other stack.

What belongs to the stack is found by the names the program derives (naming.py), not by tags:
every name ends in a hash of the subscription, name prefix, project, stack, region and
nameGeneration, so another team's stack of the same name (in its own subscription, or in this
one with another prefix, region or generation) has other names, while `stack=eastus2` and
`project=phi3-foundry` are the tags of every copy of this project. Everything the stack creates
lives in its resource group, so the audit asks for that group and what is in it, and for the
soft-deleted Key Vault, hub and project and Log Analytics workspace that carry the stack's names
and were in that group.

An `AuditRecord` holds all the audit needs: the stack, subscription, region and names. It is
derived from `Pulumi.<stack>.yaml`, which `pulumi stack rm` deletes unless given
`--preserve-config` (pulumi/pulumi pkg/cmd/pulumi/stack/stack_remove.go: `os.Remove(path)` under
`if !preserveConfig`), so it is saved as a small JSON file to audit from afterwards.

Not audited, because nothing of them outlives the group: the storage account (a deleted account
may be recovered for 14 days, but its name is free at once: "A new storage account with the same
name has not been created since": MicrosoftDocs/azure-docs articles/storage/common/
storage-account-recover.md), the container registry (soft delete applies to artifacts inside a
registry, and goes with it: articles/container-registry/container-registry-soft-delete-policy.md)
and Application Insights (its API has delete, and purge of data, but no deleted state:
applicationinsights stable/2020-02-02 components API; its data is in Log Analytics).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from phi3_infra.azure.api_versions import (
    KEY_VAULT_API_VERSION,
    ML_API_VERSION,
    PROVIDERS_API_VERSION,
)
from phi3_infra.azure.arm import ArmClient, ArmNotFoundError
from phi3_infra.azure.preflight import (
    deleted_vault_blockers,
    deleted_workspace_blockers,
)
from phi3_infra.azure.purge import (
    log_analytics_recovery_advice,
    resource_group_of,
    soft_deleted_log_analytics,
)
from phi3_infra.config import StackConfig
from phi3_infra.naming import SUBSCRIPTION_GUID, StackNames, stack_names

RECORD_KIND = "phi3-foundry/teardown-record"
RECORD_VERSION = 1


class RecordError(ValueError):
    """A record file that cannot be read or is not a teardown record."""


@dataclass(frozen=True)
class AuditRecord:
    """What identifies one stack's resources in Azure."""

    project: str
    stack: str
    subscription_id: str
    location: str
    names: StackNames

    @classmethod
    def of_stack(
        cls, config: StackConfig, project: str, stack: str, subscription_id: str
    ) -> AuditRecord:
        """The stack's record, with the names the program derives (ValueError for a
        subscription that is not a GUID: the names hash it)."""
        names = stack_names(config, project, stack, subscription_id)
        return cls(project, stack, subscription_id.lower(), config.location, names)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": RECORD_KIND,
            "version": RECORD_VERSION,
            "project": self.project,
            "stack": self.stack,
            "subscription_id": self.subscription_id,
            "location": self.location,
            "names": asdict(self.names),
        }

    @classmethod
    def from_json(cls, data: Any) -> AuditRecord:
        if not isinstance(data, dict) or data.get("kind") != RECORD_KIND:
            raise RecordError(f'not a teardown record (no "kind": "{RECORD_KIND}")')
        if data.get("version") != RECORD_VERSION:
            raise RecordError(f"record version {data.get('version')!r}, this audit reads 1")
        text = {key: data.get(key) for key in ("project", "stack", "subscription_id", "location")}
        bad = sorted(key for key, value in text.items() if not isinstance(value, str) or not value)
        if bad:
            raise RecordError(f"missing or empty: {', '.join(bad)}")
        if not SUBSCRIPTION_GUID.fullmatch(str(text["subscription_id"])):
            raise RecordError(f"subscription_id {text['subscription_id']!r} is not a GUID")
        names = data.get("names")
        expected = [field.name for field in fields(StackNames)]
        if not isinstance(names, dict) or any(not isinstance(names.get(k), str) for k in expected):
            raise RecordError(f'"names" must give each of: {", ".join(expected)}')
        return cls(
            str(text["project"]),
            str(text["stack"]),
            str(text["subscription_id"]).lower(),
            str(text["location"]),
            StackNames(**{key: names[key] for key in expected}),
        )

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> AuditRecord:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise RecordError(error.strerror or str(error)) from None
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RecordError(f"not JSON: {error}") from None
        return cls.from_json(data)


@dataclass(frozen=True)
class Leftover:
    # resource_group | resource | soft_deleted_key_vault | soft_deleted_workspace |
    # soft_deleted_log_analytics
    kind: str
    name: str
    detail: str


def audit(client: ArmClient, record: AuditRecord) -> list[Leftover]:
    """Everything of the record's stack that is still in Azure, each with how to remove it."""
    return _live(client, record) + _soft_deleted(client, record)


def _live(client: ArmClient, record: AuditRecord) -> list[Leftover]:
    """The stack's resource group (ResourceGroups_Get) and what is in it
    (Resources_ListByResourceGroup): resources Azure or a person added included."""
    group = record.names.resource_group
    path = f"/subscriptions/{record.subscription_id}/resourcegroups/{group}"
    try:
        client.get_json(path, PROVIDERS_API_VERSION)
    except ArmNotFoundError:
        return []
    found = [Leftover("resource_group", group, f"az group delete --name {group} --yes")]
    found += [
        Leftover("resource", str(item.get("name")), f"{item.get('type')}: {item.get('id')}")
        for item in client.list_json(f"{path}/resources", PROVIDERS_API_VERSION)
    ]
    return found


def _in_group(
    items: Iterable[dict[str, Any]], group: str, arm_id: Callable[[dict[str, Any]], Any]
) -> list[dict[str, Any]]:
    """The items whose ARM id (`arm_id` of the item) is in `group`."""
    return [item for item in items if resource_group_of(str(arm_id(item) or "")) == group.lower()]


def _soft_deleted(client: ArmClient, record: AuditRecord) -> list[Leftover]:
    sub, names = f"/subscriptions/{record.subscription_id}", record.names
    group = names.resource_group
    vaults = client.list_json(
        f"{sub}/providers/Microsoft.KeyVault/deletedVaults", KEY_VAULT_API_VERSION
    )
    # A deleted vault keeps the id of the vault it was, with its group (keyvault stable/
    # 2023-07-01 examples/listDeletedVaults.json: properties.vaultId).
    found = [
        Leftover(blocker.kind, blocker.name, blocker.advice)
        for blocker in deleted_vault_blockers(
            _in_group(vaults, group, lambda vault: (vault.get("properties") or {}).get("vaultId")),
            [names.key_vault],
        )
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
        for blocker in deleted_workspace_blockers(
            _in_group(workspaces, group, lambda workspace: workspace.get("id")),
            [names.project, names.hub],
        )
    ]
    advice = log_analytics_recovery_advice(group, record.location, names.log_analytics)
    found += [
        Leftover("soft_deleted_log_analytics", str(item.get("name")), advice)
        for item in soft_deleted_log_analytics(
            client, record.subscription_id, group, names.log_analytics
        )
    ]
    return found
