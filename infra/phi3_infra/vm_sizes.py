"""GPUs per node of the usual fine-tuning sizes, known before Azure is asked.

The preflight reads the count from Azure ML's vmSizes API; this is the fallback for the offline
plan and for runs with the preflight skipped.
"""

from __future__ import annotations

# GPUs per node of the usual fine-tuning sizes (Azure's NC A100 v4, NC H100 v5 and ND series
# pages), for runs where no preflight asked Azure.
KNOWN_GPUS_PER_NODE = {
    "Standard_NC24ads_A100_v4": 1,
    "Standard_NC48ads_A100_v4": 2,
    "Standard_NC96ads_A100_v4": 4,
    "Standard_NC40ads_H100_v5": 1,
    "Standard_NC80adis_H100_v5": 2,
    "Standard_ND96asr_v4": 8,
    "Standard_ND96amsr_A100_v4": 8,
    "Standard_ND96isr_H100_v5": 8,
}


def known_gpus_per_node(vm_size: str) -> int:
    """GPUs per node from the table above; an unknown size runs one process per node."""
    return KNOWN_GPUS_PER_NODE.get(vm_size, 1)
