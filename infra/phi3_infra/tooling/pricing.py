"""Hourly cost of a planned stack: idle, while training, while serving.

Prices come from `prices.json` beside this module, which states its source and date. The estimate
reads the planned resources themselves (VM sizes, node and instance counts, registry tier), so it
follows whatever the program would create. Idle GPU cost is zero by construction: training runs
on serverless compute, which exists only while a job runs (nothing is kept warm between jobs).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from phi3_infra.tooling.offline import input_at

PRICE_TABLE = Path(__file__).with_name("prices.json")
HOURS_PER_DAY = 24

REGISTRY = "azure-native:containerregistry:Registry"
JOB = "azure-native:machinelearningservices:Job"
ONLINE_DEPLOYMENT = "azure-native:machinelearningservices:OnlineDeployment"


class PlannedInputs(Protocol):
    """What the estimate needs of a planned resource (offline.PlannedResource has it)."""

    @property
    def type(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def inputs(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class PriceTable:
    source: str
    date: str
    currency: str
    priced_region: str
    caveat: str
    vm_hourly: Mapping[str, float]
    registry_daily: Mapping[str, float]
    usage_based: Mapping[str, str]

    @classmethod
    def load(cls, path: Path = PRICE_TABLE) -> PriceTable:
        raw = json.loads(path.read_text())
        return cls(
            source=raw["source"],
            date=raw["date"],
            currency=raw["currency"],
            priced_region=raw["pricedRegion"],
            caveat=raw["caveat"],
            vm_hourly=raw["vmHourly"],
            registry_daily=raw["registryDaily"],
            usage_based=raw["usageBased"],
        )


@dataclass(frozen=True)
class CostLine:
    """One billable item: what it costs per hour in the phase it belongs to."""

    phase: str  # "idle", "training" or "serving"
    item: str
    hourly: float
    detail: str


@dataclass
class CostEstimate:
    table: PriceTable
    lines: list[CostLine] = field(default_factory=list)
    unpriced: list[str] = field(default_factory=list)
    usage_based: list[str] = field(default_factory=list)

    def phase_total(self, phase: str) -> float:
        return sum(line.hourly for line in self.lines if line.phase == phase)

    @property
    def idle(self) -> float:
        return self.phase_total("idle")

    @property
    def training(self) -> float:
        """Everything idle plus the training job's instances (trainingNodes of the chosen size)."""
        return self.idle + self.phase_total("training")

    @property
    def serving(self) -> float:
        """Everything idle plus the deployment's instances."""
        return self.idle + self.phase_total("serving")

    def to_json(self) -> dict[str, Any]:
        return {
            "currency": self.table.currency,
            "perHour": {"idle": self.idle, "training": self.training, "serving": self.serving},
            "lines": [vars(line) for line in self.lines],
            "unpriced": self.unpriced,
            "usageBased": self.usage_based,
            "priceTable": {"source": self.table.source, "date": self.table.date},
        }

    def render(self) -> str:
        currency = self.table.currency
        lines = [
            f"estimated cost per hour ({currency}, {self.table.priced_region} list prices "
            f"of {self.table.date}):",
            f"  idle      {self.idle:9.3f}   (serverless training: no GPU exists between jobs)",
            f"  training  {self.training:9.3f}",
            f"  serving   {self.serving:9.3f}",
        ]
        lines += [
            f"    {line.phase:<9} {line.hourly:9.3f}  {line.item}: {line.detail}"
            for line in self.lines
        ]
        lines += [f"    not priced: {item}" for item in self.unpriced]
        if self.usage_based:
            lines.append(f"    plus usage-based charges: {', '.join(self.usage_based)}")
        lines.append(f"  source: {self.table.source}. {self.table.caveat}")
        return "\n".join(lines)


def _vm_line(
    estimate: CostEstimate, phase: str, item: str, vm_size: str, count: int, extra: str
) -> None:
    hourly = estimate.table.vm_hourly.get(vm_size)
    if hourly is None:
        estimate.unpriced.append(f"{item}: {count} x {vm_size} (size not in the price table)")
        return
    detail = f"{count} x {vm_size} at {hourly:.3f}/h{extra}"
    estimate.lines.append(CostLine(phase, item, count * hourly, detail))


def estimate_costs(
    resources: Iterable[PlannedInputs], table: PriceTable | None = None
) -> CostEstimate:
    """Hourly cost of the planned resources, by phase."""
    estimate = CostEstimate(table or PriceTable.load())
    for resource in resources:
        inputs = resource.inputs
        if resource.type == REGISTRY:
            tier = str(input_at(inputs, "sku.name"))
            daily = estimate.table.registry_daily.get(tier)
            if daily is None:
                estimate.unpriced.append(f"{resource.name}: registry tier {tier}")
            else:
                detail = f"{tier} tier at {daily:.4f}/day"
                estimate.lines.append(
                    CostLine("idle", resource.name, daily / HOURS_PER_DAY, detail)
                )
        elif resource.type == JOB:
            vm_size = input_at(inputs, "properties.resources.instanceType")
            nodes = int(input_at(inputs, "properties.resources.instanceCount") or 1)
            spot = input_at(inputs, "properties.queueSettings.jobTier") == "Spot"
            extra = " (dedicated price: an upper bound for Spot)" if spot else ""
            _vm_line(estimate, "training", resource.name, str(vm_size), nodes, extra)
        elif resource.type == ONLINE_DEPLOYMENT:
            vm_size = input_at(inputs, "properties.instanceType")
            instances = int(input_at(inputs, "sku.capacity") or 1)
            _vm_line(estimate, "serving", resource.name, str(vm_size), instances, "")
        elif resource.type in estimate.table.usage_based:
            estimate.usage_based.append(
                f"{resource.name} ({estimate.table.usage_based[resource.type]})"
            )
    return estimate
