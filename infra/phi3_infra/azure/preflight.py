"""Preflight: everything Azure can tell us before the first resource is created.

Per region: for training, is each candidate VM size offered to Azure ML compute there, and do
vCPUs x nodes fit the family's Azure ML quota and the regional total (dedicated or low-priority)?
For serving, is the instance type one managed online endpoints accept, and do its instances, with
the 20% upgrade reserve, fit the same quota? Per subscription: are the resource providers the
stack needs registered, are its globally unique names (storage account, registry, Key Vault) free
or already this stack's own, and does a soft-deleted Key Vault or workspace hold a name it would
use? All ARM reads run concurrently. The result ranks the training candidates, chooses one per
region, and says exactly what to do when something does not fit.

Training runs as a serverless job. Serverless jobs "consume the same quota as Azure Machine
Learning compute quota"; a job whose size has quota that other jobs are using "must wait in a
queue until quota is available" (MicrosoftDocs/azure-ai-docs, articles/machine-learning/
how-to-use-serverless-compute.md, intro and "Quota"). So the quota *limit* decides whether a size
can train at all; what is in use only delays it. A managed online deployment has no queue: "Each
deployment subtracts from available quota" (how-to-troubleshoot-online-endpoints.md, "CPU
quota"), so serving needs free quota.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any, TypeVar

from phi3_infra.azure.api_versions import (
    KEY_VAULT_API_VERSION,
    ML_API_VERSION,
    PROVIDERS_API_VERSION,
    REGISTRY_API_VERSION,
    STORAGE_API_VERSION,
)
from phi3_infra.azure.arm import ArmClient, ArmError, ArmNotFoundError
from phi3_infra.catalog.online_sizes import instances_reserved, offered_to_managed_online
from phi3_infra.config import config_key
from phi3_infra.naming import SUBSCRIPTION_GUID

# Network is not used directly, but Azure requires it registered for this workflow.
REQUIRED_PROVIDERS = (
    "Microsoft.MachineLearningServices",
    "Microsoft.Storage",
    "Microsoft.KeyVault",
    "Microsoft.ContainerRegistry",
    "Microsoft.ManagedIdentity",
    "Microsoft.Insights",
    "Microsoft.OperationalInsights",
    "Microsoft.Network",
)

_ML = "Microsoft.MachineLearningServices"
_REGION = re.compile(r"^[a-z][a-z0-9]+$")
_SKU = re.compile(r"^Standard_[A-Za-z0-9_-]+$")
QUOTA_PORTAL_PATH = (
    "Azure Machine Learning studio > Quota > your subscription > {region} > '{label}' > "
    "Request quota (or Azure portal > Quotas > Azure Machine Learning)"
)
_T = TypeVar("_T")


@dataclass(frozen=True)
class GlobalNameKind:
    """A resource type whose name is a global DNS name, and where ARM checks it."""

    label: str
    namespace: str
    collection: str
    api_version: str

    @property
    def resource_type(self) -> str:
        return f"{self.namespace}/{self.collection}"


# All three take POST /subscriptions/{s}/providers/{namespace}/checkNameAvailability with
# {"name", "type"} and answer {"nameAvailable", "reason", "message"} (azure-rest-api-specs:
# storage stable/2024-01-01 storage.json StorageAccounts_CheckNameAvailability; containerregistry
# stable/2023-07-01 Registries_CheckNameAvailability; keyvault stable/2023-07-01 keyvault.json
# Vaults_CheckNameAvailability). Keys are StackNames.globally_unique()'s.
GLOBAL_NAME_KINDS: Mapping[str, GlobalNameKind] = {
    "storage_account": GlobalNameKind(
        "storage account", "Microsoft.Storage", "storageAccounts", STORAGE_API_VERSION
    ),
    "container_registry": GlobalNameKind(
        "container registry", "Microsoft.ContainerRegistry", "registries", REGISTRY_API_VERSION
    ),
    "key_vault": GlobalNameKind("Key Vault", "Microsoft.KeyVault", "vaults", KEY_VAULT_API_VERSION),
}


class Verdict(StrEnum):
    FITS = "fits"
    QUEUES = "queues"  # the quota limit covers it, but other work holds part of it now
    TRAINED = "trained"  # the stack's existing training job ran on it: nothing new runs
    NO_QUOTA = "no_quota"
    UNAVAILABLE = "unavailable"


class PreflightError(Exception):
    """The preflight stopped the deployment; the message says why and what to do."""


class PreflightFailed(PreflightError):
    """Azure answered, and what the stack needs does not fit."""

    def __init__(self, report: PreflightReport) -> None:
        super().__init__(report.failure_message())
        self.report = report


class PreflightUnavailable(PreflightError):
    """The checks could not run (sign-in, permissions, network, throttling)."""


@dataclass(frozen=True)
class ServingRequest:
    """The managed online deployment the stack will create or update."""

    instance_type: str
    instance_count: int
    # ARM id of the deployment this run serves from. When it exists (a re-run), its instances
    # already hold their quota, so they must not count against it again. A new model is a new
    # deployment (serving.py): the endpoint's other deployments keep serving, and holding their
    # quota, until traffic has moved to it, so both need quota at once.
    deployment_id: str = ""

    @property
    def deployment_name(self) -> str:
        return self.deployment_id.rsplit("/", 1)[-1]

    @property
    def endpoint_deployments(self) -> str:
        """The path that lists the endpoint's deployments (OnlineDeployments_List)."""
        return self.deployment_id.rsplit("/", 1)[0]


@dataclass(frozen=True)
class PreflightRequest:
    """What the stack will ask Azure for; validated on construction."""

    subscription_id: str
    regions: tuple[str, ...]
    # Training candidates, most preferred first; empty: the stack trains nothing.
    skus: tuple[str, ...] = ()
    training_nodes: int = 1
    low_priority: bool = False
    # The size this stack's existing training job already ran on (set by the program when the
    # job exists): it is reported as the choice and needs no quota, since nothing new runs.
    fixed_sku: str | None = None
    serving: ServingRequest | None = None
    key_vault_names: tuple[str, ...] = ()
    workspace_names: tuple[str, ...] = ()
    # Global DNS names the stack creates, by GLOBAL_NAME_KINDS key; free, or this stack's own.
    unique_names: dict[str, str] = field(default_factory=dict)
    # Where the stack's own resources live: a taken name that is ours there is not a conflict.
    resource_group: str = ""

    def __post_init__(self) -> None:
        problems = []
        if not SUBSCRIPTION_GUID.fullmatch(self.subscription_id):
            problems.append(f"subscription_id {self.subscription_id!r} is not a subscription GUID")
        if not self.regions:
            problems.append("regions is empty: name at least one Azure region, e.g. eastus2")
        problems += [
            f"region {region!r} is not an Azure region name (lowercase, no spaces, e.g. eastus2)"
            for region in self.regions
            if not _REGION.match(region)
        ]
        sizes = [*self.skus, *filter(None, [self.fixed_sku])]
        if self.serving is not None:
            sizes.append(self.serving.instance_type)
            if self.serving.instance_count < 1:
                problems.append(
                    f"serving instance_count is {self.serving.instance_count}; it must be at "
                    "least 1"
                )
        problems += [
            f"sku {sku!r} is not an Azure VM size name (Standard_...)"
            for sku in sizes
            if not _SKU.match(sku)
        ]
        if self.training_nodes < 1:
            problems.append(f"training_nodes is {self.training_nodes}; it must be at least 1")
        names = (*self.key_vault_names, *self.workspace_names, *self.unique_names.values())
        problems += ["a name to check is empty" for name in names if not name]
        problems += [
            f"unique_names kind {kind!r} is not one of {sorted(GLOBAL_NAME_KINDS)}"
            for kind in self.unique_names
            if kind not in GLOBAL_NAME_KINDS
        ]
        if problems:
            raise ValueError("invalid preflight request: " + "; ".join(problems))

    @property
    def trains(self) -> bool:
        return bool(self.skus or self.fixed_sku)


@dataclass(frozen=True)
class QuotaLine:
    label: str  # the usages API's name, e.g. "Standard NCADSA100v4 Family Cluster Dedicated vCPUs"
    used: int
    limit: int  # -1: no limit of its own

    @property
    def free(self) -> int | None:
        return None if self.limit < 0 else max(self.limit - self.used, 0)

    def covers(self, needed: int) -> bool:
        return self.free is None or needed <= self.free

    def could_cover(self, needed: int) -> bool:
        """Whether the limit itself is high enough, whatever is in use now."""
        return self.limit < 0 or needed <= self.limit


@dataclass(frozen=True)
class SkuCheck:
    region: str
    sku: str
    rank: int  # position in the candidate list, 1 = most preferred (0: the fixed size)
    verdict: Verdict
    family: str = ""
    vcpus_per_node: int = 0
    gpus_per_node: int = 0
    vcpus_needed: int = 0
    family_quota: QuotaLine | None = None
    regional_quota: QuotaLine | None = None
    advice: str = ""


@dataclass(frozen=True)
class ServingCheck:
    region: str
    instance_type: str
    instance_count: int
    verdict: Verdict
    family: str = ""
    vcpus_per_instance: int = 0
    instances_reserved: int = 0  # ceil(1.2 x count), or count for sizes exempt from the reserve
    vcpus_needed: int = 0
    vcpus_held_by_own_deployment: int = 0  # not counted as used: the same deployment holds them
    # Counted as used: the endpoint's other deployments, serving until the traffic switch.
    vcpus_held_by_live_deployments: int = 0
    family_quota: QuotaLine | None = None
    regional_quota: QuotaLine | None = None
    advice: str = ""


@dataclass(frozen=True)
class RegionResult:
    region: str
    checks: tuple[SkuCheck, ...]  # training candidates; empty when the stack trains nothing
    serving: ServingCheck | None = None

    @property
    def chosen(self) -> SkuCheck | None:
        """The training size: the first that can start now, else the first that queues."""
        ready = [c for c in self.checks if c.verdict in (Verdict.FITS, Verdict.TRAINED)]
        queued = [c for c in self.checks if c.verdict is Verdict.QUEUES]
        return next(iter(ready + queued), None)

    @property
    def fits(self) -> bool:
        trains = not self.checks or self.chosen is not None
        serves = self.serving is None or self.serving.verdict is Verdict.FITS
        return trains and serves


@dataclass(frozen=True)
class Blocker:
    # provider_not_registered | name_taken | soft_deleted_key_vault | soft_deleted_workspace
    kind: str
    name: str
    advice: str


@dataclass(frozen=True)
class CallTiming:
    call: str
    seconds: float


@dataclass(frozen=True)
class PreflightReport:
    request: PreflightRequest
    regions: tuple[RegionResult, ...]
    blockers: tuple[Blocker, ...]
    warnings: tuple[str, ...]
    calls: tuple[CallTiming, ...] = field(repr=False)
    wall_seconds: float

    @property
    def fits(self) -> bool:
        return not self.blockers and all(r.fits for r in self.regions)

    @property
    def usable_regions(self) -> tuple[str, ...]:
        return () if self.blockers else tuple(r.region for r in self.regions if r.fits)

    @property
    def concurrency_ratio(self) -> float:
        """Sum of the ARM call durations over the wall time (1.0 = no overlap)."""
        return sum(c.seconds for c in self.calls) / self.wall_seconds if self.wall_seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["fits"] = self.fits
        body["usable_regions"] = list(self.usable_regions)
        body["chosen"] = {r.region: r.chosen.sku if r.chosen else None for r in self.regions}
        body["concurrency_ratio"] = round(self.concurrency_ratio, 2)
        return body

    def table(self) -> str:
        """Ranked training candidates and the serving size per region, as fixed-width tables."""
        training = [
            (
                region.region, str(c.rank), c.sku, c.family or "-", str(c.vcpus_needed or "-"),
                _free(c.family_quota), _free(c.regional_quota),
                c.verdict.value + (" <- chosen" if c is region.chosen else ""),
            )
            for region in self.regions
            for c in region.checks
        ]  # fmt: skip
        serving = [
            (
                region.region, s.instance_type, f"{s.instance_count} ({s.instances_reserved})",
                s.family or "-", str(s.vcpus_needed or "-"), _free(s.family_quota),
                _free(s.regional_quota), s.verdict.value,
            )
            for region in self.regions
            if (s := region.serving) is not None
        ]  # fmt: skip
        blocks = []
        if training:
            header = ("region", "rank", "sku", "family", "vCPUs needed", "family free",
                      "regional free", "verdict")  # fmt: skip
            blocks.append(_fixed_width([header, *training]))
        if serving:
            header = ("region", "serving size", "instances (reserved)", "family",
                      "vCPUs needed", "family free", "regional free", "verdict")  # fmt: skip
            blocks.append(_fixed_width([header, *serving]))
        verdict = (
            f"usable regions: {', '.join(self.usable_regions)}"
            if self.usable_regions
            else "no region can run the stack"
        )
        return "\n\n".join([*blocks, verdict])

    def failure_message(self) -> str:
        """Every reason the stack cannot be created, each with what to do about it."""
        parts = [f"Preflight failed for subscription {self.request.subscription_id}:"]
        parts += [f"- {b.advice}" for b in self.blockers]
        request = self.request
        for region in self.regions:
            if region.checks and region.chosen is None:
                nodes = f"{request.training_nodes} node(s), {_priority(request.low_priority)}"
                parts.append(
                    f"- {region.region}: none of {', '.join(request.skus)} can train ({nodes}):"
                )
                parts += [
                    f"    {advice}" for advice in dict.fromkeys(c.advice for c in region.checks)
                ]
            if region.serving is not None and region.serving.verdict is not Verdict.FITS:
                parts.append(f"- {region.region}: serving: {region.serving.advice}")
        return "\n".join(parts)


def _fixed_width(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _free(line: QuotaLine | None) -> str:
    if line is None:
        return "-"
    return "no limit" if line.free is None else f"{line.free} of {line.limit}"


def _priority(low_priority: bool) -> str:
    return "low-priority" if low_priority else "dedicated"


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
        if str(row.get("type", "")).lower() == f"{_ML}/{kind}/usages".lower()
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
    scope = f"/subscriptions/{subscription_id}/providers/{_ML}/locations/{region}"
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
    priority = _priority(request.low_priority)
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
        answer = _value(answers[kind])
        if answer.get("nameAvailable") is True:
            continue
        mine = own.get(kind)
        if mine is not None and not isinstance(mine, ArmNotFoundError):
            _value(mine)  # auth or outage: could not tell whose it is
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


class _TimedReads:
    """The ARM reads of one preflight as jobs for the thread pool, each timed into `calls`."""

    def __init__(self, client: ArmClient, subscription: str) -> None:
        self.client = client
        self.subscription = subscription
        self.calls: list[CallTiming] = []

    def _timed(self, path: str, fetch: Callable[[], _T]) -> Callable[[], _T]:
        def run() -> _T:
            started = time.perf_counter()
            try:
                return fetch()
            finally:
                self.calls.append(CallTiming(path, time.perf_counter() - started))

        return run

    def listing(self, path: str, api_version: str) -> Callable[[], list[dict[str, Any]]]:
        return self._timed(path, lambda: list(self.client.list_json(path, api_version)))

    def getting(self, path: str, api_version: str) -> Callable[[], dict[str, Any]]:
        return self._timed(path, lambda: self.client.get_json(path, api_version))

    def checking(self, name: str, kind: GlobalNameKind) -> Callable[[], dict[str, Any]]:
        path = f"{self.subscription}/providers/{kind.namespace}/checkNameAvailability"
        body = {"name": name, "type": kind.resource_type}
        return self._timed(path, lambda: self.client.post_json(path, kind.api_version, body))


def _reads(request: PreflightRequest, arm: _TimedReads) -> dict[str, Callable[[], Any]]:
    """What the request needs read, by result key: providers always; soft-deleted names, global
    names (and the stack's own resources holding them), the live deployments, and each region's
    sizes and usages when the stack has them."""
    sub = arm.subscription
    ml = f"{sub}/providers/{_ML}"
    jobs: dict[str, Callable[[], Any]] = {
        "providers": arm.listing(f"{sub}/providers", PROVIDERS_API_VERSION)
    }
    if request.key_vault_names:
        jobs["deleted_vaults"] = arm.listing(
            f"{sub}/providers/Microsoft.KeyVault/deletedVaults", KEY_VAULT_API_VERSION
        )
    if request.workspace_names:
        jobs["deleted_workspaces"] = arm.listing(f"{ml}/deletedWorkspaces", ML_API_VERSION)
    for kind, name in request.unique_names.items():
        spec = GLOBAL_NAME_KINDS[kind]
        jobs[f"name/{kind}"] = arm.checking(name, spec)
        if request.resource_group:
            own_id = (
                f"{sub}/resourceGroups/{request.resource_group}/providers/"
                f"{spec.resource_type}/{name}"
            )
            jobs[f"own/{kind}"] = arm.getting(own_id, spec.api_version)
    if request.serving is not None and request.serving.deployment_id:
        jobs["deployments"] = arm.listing(request.serving.endpoint_deployments, ML_API_VERSION)
    if request.trains or request.serving is not None:
        for region in request.regions:
            locations = f"{ml}/locations/{region}"
            jobs[f"{region}/vmSizes"] = arm.listing(f"{locations}/vmSizes", ML_API_VERSION)
            jobs[f"{region}/usages"] = arm.listing(f"{locations}/usages", ML_API_VERSION)
    return jobs


def run_preflight(client: ArmClient, request: PreflightRequest) -> PreflightReport:
    """Query ARM concurrently and judge every region, candidate, name and provider.

    Raises ArmError subclasses when the checks cannot run (auth, network, throttling).
    """
    arm = _TimedReads(client, f"/subscriptions/{request.subscription_id}")
    jobs = _reads(request, arm)
    client.authenticate()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="preflight") as pool:
        futures = {key: pool.submit(_outcome, job) for key, job in jobs.items()}
    wall = time.perf_counter() - started
    results = {key: future.result() for key, future in futures.items()}

    blockers, warnings = _subscription_blockers(request, results)
    regions = [_judge_region(request, region, results) for region in request.regions]
    warnings += [
        chosen.advice
        for region in regions
        if (chosen := region.chosen) is not None and chosen.verdict is Verdict.QUEUES
    ]
    return PreflightReport(
        request, tuple(regions), tuple(blockers), tuple(warnings), tuple(arm.calls), wall
    )


def _subscription_blockers(
    request: PreflightRequest, results: Mapping[str, Any]
) -> tuple[list[Blocker], list[str]]:
    """Providers, global names and soft-deleted names: what blocks the stack in every region."""
    warnings: list[str] = []
    blockers = provider_blockers(_value(results["providers"]))
    unregistered = {b.name.lower() for b in blockers}
    soft_deleted = []
    if "deleted_vaults" in results:
        soft_deleted = deleted_vault_blockers(
            _value(results["deleted_vaults"]), request.key_vault_names
        )
    if "deleted_workspaces" in results:
        outcome = results["deleted_workspaces"]
        if isinstance(outcome, ArmNotFoundError):
            warnings.append(
                "could not list soft-deleted workspaces (ARM has no deletedWorkspaces type here): "
                "check Azure Machine Learning > Recently deleted in the portal for "
                + ", ".join(request.workspace_names)
            )
        else:
            soft_deleted += deleted_workspace_blockers(_value(outcome), request.workspace_names)
    # An unregistered provider cannot answer for its names; a soft-deleted vault is reported
    # with its purge command. Neither is also a "name taken".
    skip = {b.name.lower() for b in soft_deleted} | {
        name.lower()
        for kind, name in request.unique_names.items()
        if GLOBAL_NAME_KINDS[kind].namespace.lower() in unregistered
    }
    answers = {kind: results[f"name/{kind}"] for kind in request.unique_names}
    own = {
        kind: results[f"own/{kind}"] for kind in request.unique_names if f"own/{kind}" in results
    }
    blockers += name_blockers(request, answers, own, skip)
    return blockers + soft_deleted, warnings


def _judge_region(
    request: PreflightRequest, region: str, results: Mapping[str, Any]
) -> RegionResult:
    if not (request.trains or request.serving is not None):
        return RegionResult(region, ())
    sizes, usages = results[f"{region}/vmSizes"], results[f"{region}/usages"]
    error = next((o for o in (sizes, usages) if isinstance(o, ArmError)), None)
    if error is not None:
        _raise_if_unchecked(error)
        advice = f"Azure ML compute is not available in {region}: {error}"
        names = [request.fixed_sku] if request.fixed_sku else request.skus
        checks = tuple(
            SkuCheck(region, sku, rank, Verdict.UNAVAILABLE, advice=advice)
            for rank, sku in enumerate(names, 1)
        )
        serving = (
            ServingCheck(
                region,
                request.serving.instance_type,
                request.serving.instance_count,
                Verdict.UNAVAILABLE,
                advice=advice,
            )
            if request.serving is not None
            else None
        )
        return RegionResult(region, checks, serving)
    if request.fixed_sku:
        checks = (check_fixed_sku(region, request.fixed_sku, sizes),)
    else:
        checks = tuple(
            check_sku(request, region, rank, sku, sizes, usages)
            for rank, sku in enumerate(request.skus, 1)
        )
    serving_check = None
    if request.serving is not None:
        listed = results.get("deployments")
        # No endpoint yet (404): its first deployment.
        found = [] if listed is None or isinstance(listed, ArmNotFoundError) else _value(listed)
        serving_check = check_serving(request, request.serving, region, sizes, usages, found)
    return RegionResult(region, checks, serving_check)


def _outcome(job: Callable[[], _T]) -> _T | ArmError:
    try:
        return job()
    except ArmError as exc:
        return exc


def _raise_if_unchecked(error: ArmError) -> None:
    """Auth, throttling and outages mean "could not check": never report them as "does not fit"."""
    if type(error) is not ArmError:
        raise error


def _value(outcome: _T | ArmError) -> _T:
    if isinstance(outcome, ArmError):
        raise outcome
    return outcome


def require_fit(client: ArmClient, request: PreflightRequest) -> PreflightReport:
    """For the Pulumi program, before it registers any resource: the report, or stop.

    Raises PreflightFailed (does not fit, with what to do) or PreflightUnavailable (could not
    check). A stack can skip the preflight explicitly through its skip_preflight setting.
    """
    if len(request.regions) != 1:
        raise ValueError(f"a stack deploys to one region; got {list(request.regions)}")
    try:
        report = run_preflight(client, request)
    except ArmError as exc:
        raise PreflightUnavailable(
            f"Preflight could not check Azure ({type(exc).__name__}): {exc}. Sign in with "
            f"`az login` (or set the service principal variables), make sure the identity can "
            f"read the subscription, or skip the check with the stack's skip_preflight setting."
        ) from exc
    if not report.fits:
        raise PreflightFailed(report)
    return report
