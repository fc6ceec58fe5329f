"""Quota: does a training size or the serving deployment fit its family's Azure ML quota?"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from phi3_infra.azure.preflight.report import (
    QuotaLine,
    ServingCheck,
    SkuCheck,
    Verdict,
    priority_label,
)
from phi3_infra.azure.preflight.request import ML_PROVIDER, PreflightRequest, ServingRequest
from phi3_infra.catalog.online_sizes import instances_reserved, offered_to_managed_online
from phi3_infra.config import config_key

QUOTA_PORTAL_PATH = (
    "Azure Machine Learning studio > Quota > your subscription > {region} > '{label}' > "
    "Request quota (or Azure portal > Quotas > Azure Machine Learning)"
)


def normalize_family(name: str) -> str:
    """One key for a VM family across APIs.

    vmSizes says "standardNCADSA100v4Family"; usages says
    "Standard NCADSA100v4 Family Cluster Dedicated vCPUs": both become "standardncadsa100v4family".
    """
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    return re.sub(r"cluster(dedicated|lowpriority)vcpus$", "", key)


def _usage_rows(usages: Iterable[dict[str, Any]], kind: str) -> list[QuotaLine]:
    # Subscription-level rows only: ARM also lists per-workspace rows with the same names.
    return [
        QuotaLine(row["name"]["value"], int(row["currentValue"]), int(row["limit"]))
        for row in usages
        if str(row.get("type", "")).lower() == f"{ML_PROVIDER}/{kind}/usages".lower()
    ]


def usage_label(family: str) -> str:
    """vmSizes family to the usages spelling: standardNCSv3Family -> Standard NCSv3 Family."""
    return f"Standard {re.sub(r'(?i)^standard|family$', '', family)} Family"


def _quota_lines(
    usages: Sequence[dict[str, Any]], family: str, low_priority: bool
) -> tuple[QuotaLine | None, QuotaLine | None]:
    """The family's line and the regional total's line for one priority."""
    key, word = normalize_family(family), "LowPriority" if low_priority else "Dedicated"
    rows = [r for r in _usage_rows(usages, "vmFamily") if normalize_family(r.label) == key]
    family_line = next((r for r in rows if f"Cluster {word} vCPUs" in r.label), None)
    if family_line is None and not low_priority:
        # No row means the subscription has no quota for the family in this region.
        family_line = QuotaLine(f"{usage_label(family)} Cluster Dedicated vCPUs", 0, 0)
    total_kind = "lowPriorityCores" if low_priority else "dedicatedCores"
    return family_line, next(iter(_usage_rows(usages, total_kind)), None)


def _quota_shortfall(
    subscription_id: str,
    region: str,
    short: Sequence[QuotaLine],
    family_line: QuotaLine | None,
    family: str,
    needed: int,
    low_priority: bool,
) -> str:
    """What to raise, for each quota line too small for `needed` vCPUs: the family's line is
    raised by its family name, the regional total by the name `az quota list` shows."""
    return "; ".join(
        _quota_advice(
            subscription_id,
            region,
            line,
            needed,
            family if line is family_line else "",
            low_priority,
        )
        for line in short
    )


def _quota_advice(
    subscription_id: str,
    region: str,
    line: QuotaLine,
    needed: int,
    family: str,
    low_priority: bool,
) -> str:
    scope = f"/subscriptions/{subscription_id}/providers/{ML_PROVIDER}/locations/{region}"
    target = line.used + needed
    portal = QUOTA_PORTAL_PATH.format(region=region, label=line.label)
    if family:
        quota_type = "lowPriority" if low_priority else "dedicated"
        resource = f"--resource-name {family} --resource-type {quota_type}"
    else:
        resource = f"--resource-name <the '{line.label}' name from: az quota list --scope {scope}>"
    return (
        f"'{line.label}' in {region}: need {needed} vCPUs, used {line.used}, limit {line.limit} "
        f"({line.free} free). Raise the limit to at least {target}: portal: {portal}; CLI: "
        f"az quota update --scope {scope} {resource} "
        f"--limit-object value={target} limit-object-type=LimitValue"
    )


def _find_size(vm_sizes: Sequence[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((s for s in vm_sizes if str(s.get("name", "")).lower() == name.lower()), None)


def check_sku(
    request: PreflightRequest,
    region: str,
    rank: int,
    sku: str,
    vm_sizes: Sequence[dict[str, Any]],
    usages: Sequence[dict[str, Any]],
) -> SkuCheck:
    """One training candidate in one region, from that region's vmSizes and usages answers."""
    size = _find_size(vm_sizes, sku)
    priority = priority_label(request.low_priority)
    if size is None or "AmlCompute" not in size.get("supportedComputeTypes", []):
        advice = (
            f"{sku} is not offered for Azure ML compute in {region}; pick another size or region "
            f"(list them: az ml compute list-sizes --location {region} --type AmlCompute)"
        )
        return SkuCheck(region, sku, rank, Verdict.UNAVAILABLE, advice=advice)
    family, vcpus, gpus = str(size["family"]), int(size["vCPUs"]), int(size.get("gpus", 0))
    needed = vcpus * request.training_nodes
    sized = SkuCheck(region, sku, rank, Verdict.UNAVAILABLE, family, vcpus, gpus, needed)
    if request.low_priority and not size.get("lowPriorityCapable", False):
        advice = f"{sku} cannot run low-priority in {region}; use dedicated nodes or another size"
        return replace(sized, advice=advice)
    family_line, regional_line = _quota_lines(usages, family, request.low_priority)
    sized = replace(sized, family_quota=family_line, regional_quota=regional_line)
    lines = [line for line in (family_line, regional_line) if line is not None]
    short = [line for line in lines if not line.could_cover(needed)]
    if short:
        header = f"{sku} ({family}, {vcpus} vCPUs x {request.training_nodes} {priority} node(s))"
        reasons = _quota_shortfall(
            request.subscription_id,
            region,
            short,
            family_line,
            family,
            needed,
            request.low_priority,
        )
        return replace(sized, verdict=Verdict.NO_QUOTA, advice=f"{header}: {reasons}")
    busy = [line for line in lines if not line.covers(needed)]
    if busy:
        held = ", ".join(f"'{ln.label}' {ln.used} of {ln.limit} in use" for ln in busy)
        advice = (
            f"{sku} in {region}: the quota limit covers {needed} vCPUs but other work holds part "
            f"of it ({held}); the job waits in Azure ML's queue until enough is released"
        )
        return replace(sized, verdict=Verdict.QUEUES, advice=advice)
    return replace(sized, verdict=Verdict.FITS)


def check_fixed_sku(region: str, sku: str, vm_sizes: Sequence[dict[str, Any]]) -> SkuCheck:
    """The size the stack's existing training job ran on: reported, and no quota needed."""
    size = _find_size(vm_sizes, sku) or {}
    return SkuCheck(
        region,
        sku,
        0,
        Verdict.TRAINED,
        str(size.get("family", "")),
        int(size.get("vCPUs", 0)),
        int(size.get("gpus", 0)),
        advice="the stack's training job already ran on this size: no new capacity is needed",
    )


def check_serving(
    request: PreflightRequest,
    serving: ServingRequest,
    region: str,
    vm_sizes: Sequence[dict[str, Any]],
    usages: Sequence[dict[str, Any]],
    deployments: Sequence[dict[str, Any]],
) -> ServingCheck:
    """The serving size in one region: offered to managed online endpoints, and its quota, next
    to the endpoint's `deployments` as ARM lists them (the one this run serves from among them
    when it exists)."""
    instance_type, count = serving.instance_type, serving.instance_count
    key = config_key("serving_instance_type")
    unchecked = ServingCheck(region, instance_type, count, Verdict.UNAVAILABLE)
    if not offered_to_managed_online(instance_type):
        advice = (
            f"{instance_type} is not a size managed online endpoints accept (Learn: 'Managed "
            f"online endpoints SKU list'); set {key} to one of them, e.g. Standard_E4s_v3"
        )
        return replace(unchecked, advice=advice)
    size = _find_size(vm_sizes, instance_type)
    if size is None:
        advice = (
            f"{instance_type} is not offered by Azure ML in {region}; set {key} to another size "
            f"(az ml compute list-sizes --location {region}) or choose another region"
        )
        return replace(unchecked, advice=advice)
    family, vcpus = str(size["family"]), int(size["vCPUs"])
    reserved = instances_reserved(instance_type, count)
    needed = reserved * vcpus
    sized = replace(
        unchecked,
        family=family,
        vcpus_per_instance=vcpus,
        instances_reserved=reserved,
        vcpus_needed=needed,
    )
    name = serving.deployment_name.lower()
    own = next((d for d in deployments if str(d.get("name", "")).lower() == name), None)
    own_type, own_count = _deployment_size(own)
    if own_type.lower() == instance_type.lower() and own_count == count:
        # Unchanged: the deployment already holds its instances and reserve; an update of its
        # settings rolls through that reserve.
        return replace(sized, verdict=Verdict.FITS, advice="already deployed at this size")
    held = _vcpus_in_family(own, vm_sizes, family)
    live = {
        str(d.get("name")): vcpus_held
        for d in deployments
        if d is not own and (vcpus_held := _vcpus_in_family(d, vm_sizes, family))
    }
    family_line, regional_line = (
        replace(line, used=max(line.used - held, 0)) if line is not None else None
        for line in _quota_lines(usages, family, low_priority=False)
    )
    sized = replace(
        sized,
        vcpus_held_by_own_deployment=held,
        vcpus_held_by_live_deployments=sum(live.values()),
        family_quota=family_line,
        regional_quota=regional_line,
    )
    short = [
        line
        for line in (family_line, regional_line)
        if line is not None and not line.covers(needed)
    ]
    if not short:
        return replace(sized, verdict=Verdict.FITS)
    reserve = (
        f"{count} instance(s) + the 20% upgrade reserve = {reserved}"
        if reserved > count
        else f"{count} instance(s), exempt from the upgrade reserve"
    )
    header = f"{instance_type} ({family}, {vcpus} vCPUs x {reserve})"
    if held:
        header += f" [used excludes the {held} vCPUs the stack's own deployment holds]"
    if live:
        header += (
            f" [used includes the {sum(live.values())} vCPUs of deployment(s) "
            f"{', '.join(sorted(live))}, which serve until traffic moves to the new one: during "
            "a rollout both run]"
        )
    reasons = _quota_shortfall(
        request.subscription_id, region, short, family_line, family, needed, low_priority=False
    )
    advice = f"{header}: {reasons}; or set {key} to a size with quota"
    return replace(sized, verdict=Verdict.NO_QUOTA, advice=advice)


def _vcpus_in_family(
    deployment: dict[str, Any] | None, vm_sizes: Sequence[dict[str, Any]], family: str
) -> int:
    """The vCPUs `deployment`'s instances hold in `family` (0 for another family)."""
    instance_type, count = _deployment_size(deployment)
    size = _find_size(vm_sizes, instance_type) if instance_type else None
    if size is None or normalize_family(str(size["family"])) != normalize_family(family):
        return 0
    return count * int(size["vCPUs"])


def _deployment_size(deployment: dict[str, Any] | None) -> tuple[str, int]:
    """(instance type, instance count) of an online deployment as ARM returns it (azure-rest-
    api-specs, machinelearningservices stable/2024-10-01 examples/OnlineDeployment/
    ManagedOnlineDeployment/get.json: properties.instanceType, sku.capacity)."""
    if not deployment:
        return "", 0
    instance_type = str(deployment.get("properties", {}).get("instanceType", ""))
    return instance_type, int((deployment.get("sku") or {}).get("capacity", 1))
