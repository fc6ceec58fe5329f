"""What the preflight found: per region and size, the verdicts, the blockers, and what to do."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from phi3_infra.azure.preflight.request import PreflightRequest


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
                nodes = f"{request.training_nodes} node(s), {priority_label(request.low_priority)}"
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


def priority_label(low_priority: bool) -> str:
    return "low-priority" if low_priority else "dedicated"
