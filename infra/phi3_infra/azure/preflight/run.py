"""The preflight run: every ARM read at once, then the verdicts."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from phi3_infra.azure.api_versions import (
    KEY_VAULT_API_VERSION,
    ML_API_VERSION,
    PROVIDERS_API_VERSION,
)
from phi3_infra.azure.arm import ArmClient, ArmError, ArmNotFoundError
from phi3_infra.azure.preflight.blockers import (
    deleted_vault_blockers,
    deleted_workspace_blockers,
    name_blockers,
    provider_blockers,
)
from phi3_infra.azure.preflight.outcome import outcome_of, raise_if_unchecked, value_of
from phi3_infra.azure.preflight.quota import check_fixed_sku, check_serving, check_sku
from phi3_infra.azure.preflight.report import (
    Blocker,
    CallTiming,
    PreflightFailed,
    PreflightReport,
    PreflightUnavailable,
    RegionResult,
    ServingCheck,
    SkuCheck,
    Verdict,
)
from phi3_infra.azure.preflight.request import (
    GLOBAL_NAME_KINDS,
    ML_PROVIDER,
    GlobalNameKind,
    PreflightRequest,
)

_T = TypeVar("_T")


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
    ml = f"{sub}/providers/{ML_PROVIDER}"
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
        futures = {key: pool.submit(outcome_of, job) for key, job in jobs.items()}
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
    blockers = provider_blockers(value_of(results["providers"]))
    unregistered = {b.name.lower() for b in blockers}
    soft_deleted = []
    if "deleted_vaults" in results:
        soft_deleted = deleted_vault_blockers(
            value_of(results["deleted_vaults"]), request.key_vault_names
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
            soft_deleted += deleted_workspace_blockers(value_of(outcome), request.workspace_names)
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
        raise_if_unchecked(error)
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
        found = [] if listed is None or isinstance(listed, ArmNotFoundError) else value_of(listed)
        serving_check = check_serving(request, request.serving, region, sizes, usages, found)
    return RegionResult(region, checks, serving_check)


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
