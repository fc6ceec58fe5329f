"""Hourly cost estimates read from the planned resources and the dated price table."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from phi3_infra.cli.plan import plan_stack
from phi3_infra.config import DEFAULT_GPU_SKUS
from phi3_infra.stack_files import stack_file_config
from phi3_infra.tooling.pricing import JOB, ONLINE_DEPLOYMENT, REGISTRY, PriceTable, estimate_costs


@dataclass(frozen=True)
class Planned:
    type: str
    name: str
    inputs: dict[str, Any] = field(default_factory=dict)


def job(vm_size: str, nodes: int, tier: str = "Standard") -> Planned:
    """A serverless command job as the program plans it (resources + queueSettings)."""
    properties = {
        "resources": {"instanceType": vm_size, "instanceCount": nodes},
        "queueSettings": {"jobTier": tier},
    }
    return Planned(JOB, "training-job", {"properties": properties})


def test_price_table_is_dated_sourced_and_prices_every_default_size() -> None:
    table = PriceTable.load()
    assert table.date == "2026-11-21" and "Retail Prices" in table.source
    for vm_size in (*DEFAULT_GPU_SKUS, "Standard_E4s_v3"):
        assert table.vm_hourly[vm_size] > 0, vm_size
    # The reference's A100 size: 24 vCPUs, one A100 80GB, at its East US list price.
    assert table.vm_hourly["Standard_NC24ads_A100_v4"] == pytest.approx(3.673)


def test_example_stack_costs_almost_nothing_idle_one_a100_training_one_e4s_serving(
    repo_root: Path,
) -> None:
    """The full-pipeline example stack, as `scripts/plan.py` prices it."""
    run = plan_stack(stack_file_config(repo_root / "Pulumi.eastus2.yaml"), "eastus2")
    table = PriceTable.load()
    estimate = estimate_costs(run.resources, table)
    basic_registry_hourly = table.registry_daily["Basic"] / 24
    assert estimate.idle == pytest.approx(basic_registry_hourly)
    assert estimate.training == pytest.approx(basic_registry_hourly + 3.673)
    assert estimate.serving == pytest.approx(basic_registry_hourly + 0.252)
    assert estimate.unpriced == []
    assert any("storage" in item for item in estimate.usage_based)
    text = estimate.render()
    assert "no GPU exists between jobs" in text and "2026-11-21" in text


def test_training_costs_every_node_of_the_job_and_nothing_idle() -> None:
    estimate = estimate_costs([job("Standard_NC24ads_A100_v4", nodes=4)])
    assert estimate.idle == 0
    assert estimate.training == pytest.approx(4 * 3.673)


def test_spot_is_shown_as_an_upper_bound() -> None:
    estimate = estimate_costs([job("Standard_NC24ads_A100_v4", 2, tier="Spot")])
    assert estimate.training == pytest.approx(2 * 3.673)
    assert "upper bound for Spot" in estimate.lines[0].detail


def test_unknown_sizes_and_tiers_are_listed_not_counted_as_free() -> None:
    estimate = estimate_costs(
        [
            job("Standard_ND96isr_H200_v5", 1),
            Planned(REGISTRY, "acr", {"sku": {"name": "Ultra"}}),
        ]
    )
    assert estimate.lines == []
    assert len(estimate.unpriced) == 2
    assert "Standard_ND96isr_H200_v5" in estimate.render()


def test_serving_counts_each_deployment_instance() -> None:
    deployment = Planned(
        ONLINE_DEPLOYMENT,
        "deployment",
        {"properties": {"instanceType": "Standard_E4s_v3"}, "sku": {"capacity": 2}},
    )
    estimate = estimate_costs([deployment, Planned(REGISTRY, "acr", {"sku": {"name": "Standard"}})])
    registry = 0.6667 / 24
    assert estimate.serving == pytest.approx(registry + 2 * 0.252)
    assert estimate.to_json()["perHour"]["serving"] == pytest.approx(registry + 2 * 0.252)
