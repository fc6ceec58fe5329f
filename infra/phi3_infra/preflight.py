"""Quota and name preflight: everything Azure can tell us before the first resource is created.

Per region and candidate VM size: is the size offered for AmlCompute there, and do vCPUs x max
nodes fit both the family's remaining Azure ML quota and the regional total (dedicated or
low-priority)? Per subscription: are the resource providers the stack needs registered, and does
a soft-deleted Key Vault or workspace hold a name the stack would use? All ARM reads run
concurrently. The result ranks the candidates, chooses the first that fits per region, and says
exactly what to do when nothing does.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any, TypeVar

from phi3_infra.arm import ArmClient, ArmError, ArmNotFoundError

ML_API_VERSION = "2024-10-01"
PROVIDERS_API_VERSION = "2021-04-01"
KEY_VAULT_API_VERSION = "2023-07-01"

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
_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_REGION = re.compile(r"^[a-z][a-z0-9]+$")
_SKU = re.compile(r"^Standard_[A-Za-z0-9_-]+$")
QUOTA_PORTAL_PATH = (
    "Azure Machine Learning studio > Quota > your subscription > {region} > '{label}' > "
    "Request quota (or Azure portal > Quotas > Azure Machine Learning)"
)
_T = TypeVar("_T")


class Verdict(StrEnum):
    FITS = "fits"
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
class PreflightRequest:
    """What the stack will ask Azure for; validated on construction."""

    subscription_id: str
    regions: tuple[str, ...]
    skus: tuple[str, ...]  # candidates, most preferred first
    max_nodes: int
    low_priority: bool = False
    key_vault_names: tuple[str, ...] = ()
    workspace_names: tuple[str, ...] = ()
    # The stack's own cluster (in one of workspace_names): re-running `pulumi up` while a job runs
    # on it must not count its nodes against itself.
    compute_name: str = ""

    def __post_init__(self) -> None:
        problems = []
        if not _GUID.match(self.subscription_id):
            problems.append(f"subscription_id {self.subscription_id!r} is not a subscription GUID")
        if not self.regions:
            problems.append("regions is empty: name at least one Azure region, e.g. eastus2")
        problems += [
            f"region {region!r} is not an Azure region name (lowercase, no spaces, e.g. eastus2)"
            for region in self.regions
            if not _REGION.match(region)
        ]
        if not self.skus:
            problems.append(
                "skus is empty: name at least one VM size, e.g. Standard_NC24ads_A100_v4"
            )
        problems += [
            f"sku {sku!r} is not an Azure VM size name (Standard_...)"
            for sku in self.skus
            if not _SKU.match(sku)
        ]
        if self.max_nodes < 1:
            problems.append(f"max_nodes is {self.max_nodes}; it must be at least 1")
        names = (*self.key_vault_names, *self.workspace_names)
        problems += [
            "key_vault_names/workspace_names contain an empty name" for n in names if not n
        ]
        if self.compute_name and not self.workspace_names:
            problems.append("compute_name is set but workspace_names is empty: name its workspace")
        if problems:
            raise ValueError("invalid preflight request: " + "; ".join(problems))


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


@dataclass(frozen=True)
class SkuCheck:
    region: str
    sku: str
    rank: int  # position in the candidate list, 1 = most preferred
    verdict: Verdict
    family: str = ""
    vcpus_per_node: int = 0
    gpus_per_node: int = 0
    vcpus_needed: int = 0
    family_quota: QuotaLine | None = None
    regional_quota: QuotaLine | None = None
    advice: str = ""


@dataclass(frozen=True)
class RegionResult:
    region: str
    checks: tuple[SkuCheck, ...]

    @property
    def chosen(self) -> SkuCheck | None:
        return next((c for c in self.checks if c.verdict is Verdict.FITS), None)


@dataclass(frozen=True)
class Blocker:
    kind: str  # provider_not_registered | soft_deleted_key_vault | soft_deleted_workspace
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
        return not self.blockers and all(r.chosen for r in self.regions)

    @property
    def usable_regions(self) -> tuple[str, ...]:
        return () if self.blockers else tuple(r.region for r in self.regions if r.chosen)

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
        """Ranked candidates per region, as a fixed-width table."""
        header = ("region", "rank", "sku", "family", "vCPUs needed", "family free", "regional free",
                  "verdict")  # fmt: skip
        rows = [header]
        for region in self.regions:
            for c in region.checks:
                mark = " <- chosen" if c is region.chosen else ""
                rows.append((
                    region.region, str(c.rank), c.sku, c.family or "-", str(c.vcpus_needed or "-"),
                    _free(c.family_quota), _free(c.regional_quota), c.verdict.value + mark,
                ))  # fmt: skip
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows
        ]
        verdict = (
            f"usable regions: {', '.join(self.usable_regions)}"
            if self.usable_regions
            else "no region can run the stack"
        )
        return "\n".join([*lines, "", verdict])

    def failure_message(self) -> str:
        """Every reason the stack cannot be created, each with what to do about it."""
        nodes = f"{self.request.max_nodes} node(s), {_priority(self.request.low_priority)}"
        parts = [f"Preflight failed for subscription {self.request.subscription_id} ({nodes}):"]
        parts += [f"- {b.advice}" for b in self.blockers]
        for region in self.regions:
            if region.chosen is None:
                parts.append(f"- {region.region}: none of {', '.join(self.request.skus)} fits:")
                parts += [
                    f"    {advice}" for advice in dict.fromkeys(c.advice for c in region.checks)
                ]
        return "\n".join(parts)


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
    # Subscription-level rows only: ARM also lists per-workspace and per-cluster rows, same names.
    return [
        QuotaLine(row["name"]["value"], int(row["currentValue"]), int(row["limit"]))
        for row in usages
        if str(row.get("type", "")).lower() == f"{_ML}/{kind}/usages".lower()
    ]


def _quota_advice(
    request: PreflightRequest, region: str, line: QuotaLine, needed: int, family: str
) -> str:
    scope = f"/subscriptions/{request.subscription_id}/providers/{_ML}/locations/{region}"
    target = line.used + needed
    portal = QUOTA_PORTAL_PATH.format(region=region, label=line.label)
    if family:
        resource = f"--resource-name {family} --resource-type {_quota_type(request.low_priority)}"
    else:
        resource = f"--resource-name <the '{line.label}' name from: az quota list --scope {scope}>"
    return (
        f"'{line.label}' in {region}: need {needed} vCPUs, used {line.used}, limit {line.limit} "
        f"({line.free} free). Raise the limit to at least {target}: portal: {portal}; CLI: "
        f"az quota update --scope {scope} {resource} "
        f"--limit-object value={target} limit-object-type=LimitValue"
    )


def _quota_type(low_priority: bool) -> str:
    return "lowPriority" if low_priority else "dedicated"


def check_sku(
    request: PreflightRequest,
    region: str,
    rank: int,
    sku: str,
    vm_sizes: Sequence[dict[str, Any]],
    usages: Sequence[dict[str, Any]],
) -> SkuCheck:
    """One candidate in one region, from that region's vmSizes and usages answers."""
    size = next((s for s in vm_sizes if str(s.get("name", "")).lower() == sku.lower()), None)
    priority = _priority(request.low_priority)
    if size is None or "AmlCompute" not in size.get("supportedComputeTypes", []):
        advice = (
            f"{sku} is not offered for Azure ML compute clusters in {region}; pick another size "
            f"or region (list them: az ml compute list-sizes --location {region} --type AmlCompute)"
        )
        return SkuCheck(region, sku, rank, Verdict.UNAVAILABLE, advice=advice)
    family, vcpus, gpus = str(size["family"]), int(size["vCPUs"]), int(size.get("gpus", 0))
    needed = vcpus * request.max_nodes
    sized = SkuCheck(region, sku, rank, Verdict.UNAVAILABLE, family, vcpus, gpus, needed)
    if request.low_priority and not size.get("lowPriorityCapable", False):
        advice = f"{sku} cannot run low-priority in {region}; use dedicated nodes or another size"
        return replace(sized, advice=advice)

    key = normalize_family(family)
    rows = [r for r in _usage_rows(usages, "vmFamily") if normalize_family(r.label) == key]
    word = "LowPriority" if request.low_priority else "Dedicated"
    family_line = next((r for r in rows if f"Cluster {word} vCPUs" in r.label), None)
    if family_line is None and not request.low_priority:
        # No row means the subscription has no quota for the family in this region.
        family_line = QuotaLine(f"{usage_label(family)} Cluster Dedicated vCPUs", 0, 0)
    total_kind = "lowPriorityCores" if request.low_priority else "dedicatedCores"
    regional_line = next(iter(_usage_rows(usages, total_kind)), None)
    own = _own_cluster_vcpus(request, usages, key, word)
    if own:
        family_line = family_line and replace(family_line, used=max(family_line.used - own, 0))
        regional_line = regional_line and replace(
            regional_line, used=max(regional_line.used - own, 0)
        )
    short = [
        (line, family if line is family_line else "")
        for line in (family_line, regional_line)
        if line is not None and not line.covers(needed)
    ]
    if short:
        header = f"{sku} ({family}, {vcpus} vCPUs x {request.max_nodes} {priority} node(s))"
        if own:
            header += f" [used excludes the {own} vCPUs the stack's {request.compute_name} holds]"
        reasons = "; ".join(_quota_advice(request, region, ln, needed, fam) for ln, fam in short)
        return replace(
            sized,
            verdict=Verdict.NO_QUOTA,
            family_quota=family_line,
            regional_quota=regional_line,
            advice=f"{header}: {reasons}",
        )
    return replace(
        sized, verdict=Verdict.FITS, family_quota=family_line, regional_quota=regional_line
    )


def _own_cluster_vcpus(
    request: PreflightRequest, usages: Iterable[dict[str, Any]], family_key: str, word: str
) -> int:
    """vCPUs the stack's own cluster holds now, from ARM's per-cluster usage rows."""
    if not request.compute_name:
        return 0
    paths = [
        f"/workspaces/{ws}/computes/{request.compute_name}/usages/".lower()
        for ws in request.workspace_names
    ]
    return sum(
        int(row["currentValue"])
        for row in usages
        if any(path in str(row.get("id", "")).lower() for path in paths)
        and normalize_family(row["name"]["value"]) == family_key
        and f"Cluster {word} vCPUs" in row["name"]["value"]
    )


def usage_label(family: str) -> str:
    """vmSizes family to the usages spelling: standardNCSv3Family -> Standard NCSv3 Family."""
    return f"Standard {re.sub(r'(?i)^standard|family$', '', family)} Family"


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
            f"workspace name '{ws['name']}' is held by a soft-deleted workspace ({ws.get('id')}); "
            f"purge it: portal: Azure Machine Learning > Recently deleted > Permanently delete, or "
            f"az rest --method delete --url "
            f'"https://management.azure.com{ws.get("id")}?api-version={ML_API_VERSION}'
            f'&forceToPurge=true"',
        )
        for ws in workspaces
        if str(ws.get("name", "")).lower() in wanted
    ]


def run_preflight(client: ArmClient, request: PreflightRequest) -> PreflightReport:
    """Query ARM concurrently and judge every region and candidate.

    Raises ArmError subclasses when the checks cannot run (auth, network, throttling).
    """
    sub = f"/subscriptions/{request.subscription_id}"
    ml = f"{sub}/providers/{_ML}"
    calls: list[CallTiming] = []

    def listing(path: str, api_version: str) -> Callable[[], list[dict[str, Any]]]:
        def fetch() -> list[dict[str, Any]]:
            started = time.perf_counter()
            try:
                return list(client.list_json(path, api_version))
            finally:
                calls.append(CallTiming(path, time.perf_counter() - started))

        return fetch

    jobs: dict[str, Callable[[], list[dict[str, Any]]]] = {
        "providers": listing(f"{sub}/providers", PROVIDERS_API_VERSION),
        "deleted_vaults": listing(
            f"{sub}/providers/Microsoft.KeyVault/deletedVaults", KEY_VAULT_API_VERSION
        ),
        "deleted_workspaces": listing(f"{ml}/deletedWorkspaces", ML_API_VERSION),
    }
    for region in request.regions:
        jobs[f"{region}/vmSizes"] = listing(f"{ml}/locations/{region}/vmSizes", ML_API_VERSION)
        jobs[f"{region}/usages"] = listing(f"{ml}/locations/{region}/usages", ML_API_VERSION)
    if not request.key_vault_names:
        del jobs["deleted_vaults"]
    if not request.workspace_names:
        del jobs["deleted_workspaces"]

    client.authenticate()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="preflight") as pool:
        futures = {key: pool.submit(_outcome, job) for key, job in jobs.items()}
    wall = time.perf_counter() - started
    results = {key: future.result() for key, future in futures.items()}

    warnings: list[str] = []
    blockers = provider_blockers(_value(results["providers"]))
    if "deleted_vaults" in results:
        blockers += deleted_vault_blockers(
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
            blockers += deleted_workspace_blockers(_value(outcome), request.workspace_names)

    regions = []
    for region in request.regions:
        sizes, usages = results[f"{region}/vmSizes"], results[f"{region}/usages"]
        error = next((o for o in (sizes, usages) if isinstance(o, ArmError)), None)
        if error is not None:
            _raise_if_unchecked(error)
            advice = f"Azure ML compute is not available in {region}: {error}"
            checks = tuple(
                SkuCheck(region, sku, rank, Verdict.UNAVAILABLE, advice=advice)
                for rank, sku in enumerate(request.skus, 1)
            )
        else:
            checks = tuple(
                check_sku(request, region, rank, sku, _value(sizes), _value(usages))
                for rank, sku in enumerate(request.skus, 1)
            )
        regions.append(RegionResult(region, checks))
    return PreflightReport(
        request, tuple(regions), tuple(blockers), tuple(warnings), tuple(calls), wall
    )


def _outcome(job: Callable[[], _T]) -> _T | ArmError:
    try:
        return job()
    except ArmError as exc:
        return exc


def _raise_if_unchecked(error: ArmError) -> None:
    """Auth, throttling and outages mean "could not check": never report them as "does not fit"."""
    if type(error) is not ArmError:
        raise error


def _value(outcome: list[dict[str, Any]] | ArmError) -> list[dict[str, Any]]:
    if isinstance(outcome, ArmError):
        raise outcome
    return outcome


def require_gpu_sku(client: ArmClient, request: PreflightRequest) -> SkuCheck:
    """For the Pulumi program, before it registers any resource: the chosen size, or stop.

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
    chosen = report.regions[0].chosen
    if not report.fits or chosen is None:
        raise PreflightFailed(report)
    return chosen
