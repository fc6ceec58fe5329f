"""GPUs per node and memory per GPU of the usual fine-tuning sizes, known before Azure is asked.

The preflight reads the GPU count from Azure ML's vmSizes API; this table is the fallback for the
offline plan and for runs with the preflight skipped. The API gives no GPU memory, so the memory
check (phi3_infra.fit) reads it here for every run.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuSize:
    gpus_per_node: int
    gpu_memory_gb: int  # per GPU, in GB (10^9 bytes) as the size pages give it
    gpu: str


# From Learn's size pages (MicrosoftDocs/azure-compute-docs, articles/virtual-machines/sizes/
# gpu-accelerated/: nca100v4-series.md "Accelerators" tab, 80 GB per A100; ncadsh100v5-series.md,
# 94 GB per H100 NVL; includes/ndasra100v4-series-specs.md, A100 40GB; includes/
# ndma100v4-series-specs.md, A100 80GB; includes/ndh100v5-series-specs.md, H100 80GB;
# nd-h200-v5-series.md, 1128 GB over 8 H200).
KNOWN_GPU_SIZES = {
    "Standard_NC24ads_A100_v4": GpuSize(1, 80, "A100 80GB PCIe"),
    "Standard_NC48ads_A100_v4": GpuSize(2, 80, "A100 80GB PCIe"),
    "Standard_NC96ads_A100_v4": GpuSize(4, 80, "A100 80GB PCIe"),
    "Standard_NC40ads_H100_v5": GpuSize(1, 94, "H100 NVL 94GB"),
    "Standard_NC80adis_H100_v5": GpuSize(2, 94, "H100 NVL 94GB"),
    "Standard_ND96asr_v4": GpuSize(8, 40, "A100 40GB"),
    "Standard_ND96amsr_A100_v4": GpuSize(8, 80, "A100 80GB"),
    "Standard_ND96isr_H100_v5": GpuSize(8, 80, "H100 80GB"),
    "Standard_ND96isr_H200_v5": GpuSize(8, 141, "H200 141GB"),
}


def known_gpus_per_node(vm_size: str) -> int:
    """GPUs per node from the table above; an unknown size runs one process per node."""
    size = KNOWN_GPU_SIZES.get(vm_size)
    return size.gpus_per_node if size else 1


def gpu_memory_bytes(vm_size: str) -> int | None:
    """Memory of one of the size's GPUs; None for a size the table does not know."""
    size = KNOWN_GPU_SIZES.get(vm_size)
    return size.gpu_memory_gb * 10**9 if size else None
