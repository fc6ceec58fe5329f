"""What an Azure VM size name tells before Azure is asked: vCPUs per node and GPUs per node.

The preflight reads both from Azure ML's vmSizes API; these are the fallbacks for the offline plan
and for runs with the preflight skipped.
"""

from __future__ import annotations

import re

# Azure size names carry the vCPU count after the family letters: Standard_NC24ads_A100_v4 -> 24;
# constrained sizes name the real count after a hyphen: Standard_E4-2s_v3 -> 2.
_SIZE_VCPUS = re.compile(r"^Standard_[A-Z]+(\d+)(?:-(\d+))?")

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


def vcpus_per_node(vm_size: str) -> int:
    """vCPUs of one node, read from the Azure size name."""
    match = _SIZE_VCPUS.match(vm_size)
    if match is None:
        raise ValueError(
            f"cannot read a vCPU count from VM size {vm_size!r} (Standard_<family><n>…)"
        )
    return int(match.group(2) or match.group(1))


def known_gpus_per_node(vm_size: str) -> int:
    """GPUs per node from the table above; an unknown size runs one process per node."""
    return KNOWN_GPUS_PER_NODE.get(vm_size, 1)
