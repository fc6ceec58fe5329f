"""Per subscription: what would stop the first resource, whatever the region."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from phi3_infra.azure.arm import ArmError, ArmNotFoundError
from phi3_infra.azure.preflight.outcome import value_of
from phi3_infra.azure.preflight.report import Blocker
from phi3_infra.azure.preflight.request import (
    GLOBAL_NAME_KINDS,
    REQUIRED_PROVIDERS,
    PreflightRequest,
)
from phi3_infra.config import config_key


def provider_blockers(providers: Iterable[dict[str, Any]]) -> list[Blocker]:
    states = {str(p.get("namespace", "")).lower(): p.get("registrationState") for p in providers}
    blockers = []
    for namespace in REQUIRED_PROVIDERS:
        state = states.get(namespace.lower(), "NotRegistered")
        if state != "Registered":
            advice = (
                f"resource provider {namespace} is {state} in the subscription; register it: "
                f"az provider register --namespace {namespace} --wait "
                f"(portal: Subscriptions > your subscription > Resource providers > {namespace} "
                f"> Register)"
            )
            blockers.append(Blocker("provider_not_registered", namespace, advice))
    return blockers


def name_blockers(
    request: PreflightRequest,
    answers: Mapping[str, dict[str, Any] | ArmError],
    own: Mapping[str, dict[str, Any] | ArmError],
    skip: set[str],
) -> list[Blocker]:
    """Global names another subscription or resource group holds.

    `answers` are checkNameAvailability's per kind, `own` the GETs of the stack's own resource
    ids (present when the request names the resource group); a name in `skip` (lowercase) is
    already reported by another blocker (its provider unregistered, or a soft-deleted vault).
    """
    fix = (
        f"names are global DNS names: get a fresh set by raising {config_key('name_generation')} "
        f"(pulumi config set {config_key('name_generation')} <current + 1>) or by changing "
        f"{config_key('name_prefix')}"
    )
    blockers = []
    for kind, name in request.unique_names.items():
        if name.lower() in skip:
            continue
        answer = value_of(answers[kind])
        if answer.get("nameAvailable") is True:
            continue
        mine = own.get(kind)
        if mine is not None and not isinstance(mine, ArmNotFoundError):
            value_of(mine)  # auth or outage: could not tell whose it is
            continue  # the stack's own resource, from an earlier run
        label = GLOBAL_NAME_KINDS[kind].label
        where = (
            f"outside this stack's resource group {request.resource_group}"
            if request.resource_group
            else "elsewhere"
        )
        azure = f"{answer.get('reason', 'unavailable')}: {answer.get('message', '')}".rstrip(": ")
        advice = f"{label} name '{name}' is taken by a resource {where} (Azure: {azure}); {fix}"
        blockers.append(Blocker("name_taken", name, advice))
    return blockers


def deleted_vault_blockers(vaults: Iterable[dict[str, Any]], names: Sequence[str]) -> list[Blocker]:
    wanted = {n.lower() for n in names}
    blockers = []
    for vault in vaults:
        name, props = str(vault.get("name", "")), vault.get("properties", {})
        if name.lower() not in wanted:
            continue
        location = props.get("location", "<location>")
        if props.get("purgeProtectionEnabled"):
            fix = (
                f"it has purge protection, so it cannot be purged before "
                f"{props.get('scheduledPurgeDate', 'its scheduled purge date')}: recover it "
                f"(az keyvault recover --name {name}) or choose another name"
            )
        else:
            fix = f"purge it: az keyvault purge --name {name} --location {location}"
        advice = f"Key Vault name '{name}' is held by a soft-deleted vault in {location}; {fix}"
        blockers.append(Blocker("soft_deleted_key_vault", name, advice))
    return blockers


def deleted_workspace_blockers(
    workspaces: Iterable[dict[str, Any]], names: Sequence[str]
) -> list[Blocker]:
    wanted = {n.lower() for n in names}
    return [
        Blocker(
            "soft_deleted_workspace",
            str(ws["name"]),
            # A DELETE with forceToPurge reaches only a live workspace (concept-soft-delete.md:
            # "at the time of deletion"; Azure/azure-cli#33756), so the portal's recovery view
            # is the one documented way to free the name of one already soft-deleted.
            f"workspace name '{ws['name']}' is held by a soft-deleted workspace ({ws.get('id')}); "
            "delete it permanently in the portal (Azure Machine Learning > Recently deleted > "
            "Permanently delete), wait until it has expired (14 days after deletion), or bump "
            "phi3-foundry:nameGeneration for fresh names",
        )
        for ws in workspaces
        if str(ws.get("name", "")).lower() in wanted
    ]
