"""The NVIDIA GPU behind each GPU size managed online endpoints accept, and whether the server
image's CUDA build can run on it.

Sizes: the rows of Azure ML's "Managed online endpoints SKU list" whose Architecture is NvidiaGpu
(MicrosoftDocs/azure-ai-docs articles/machine-learning/
reference-managed-online-endpoints-vm-sku-list.md; online_sizes.py holds the rest of that table).
GPU of each family: the "Accelerators" of its size page (MicrosoftDocs/azure-compute-docs
articles/virtual-machines/sizes/gpu-accelerated/: ncv3-series "Nvidia Tesla V100", ndv2-series
"8 NVIDIA Tesla V100", ncast4v3-series "Nvidia Tesla T4", nvadsa10v5-series "Nvidia A10",
nca100v4, ndasra100v4 and ndma100v4 A100, ncadsh100v5 and ndh100v5 H100; NCv2 is retired, its
page gone: Tesla P100). Compute capability: NVIDIA's list, developer.nvidia.com/cuda-gpus.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServingGpu:
    model: str
    compute_capability: tuple[int, int]


_P100 = ServingGpu("Tesla P100", (6, 0))
_V100 = ServingGpu("Tesla V100", (7, 0))
_T4 = ServingGpu("Tesla T4", (7, 5))
_A100 = ServingGpu("A100", (8, 0))
_A10 = ServingGpu("A10", (8, 6))
_H100 = ServingGpu("H100", (9, 0))

_GPU_OF_SIZE = {
    **dict.fromkeys(("Standard_NC6s_v2", "Standard_NC12s_v2", "Standard_NC24s_v2"), _P100),
    **dict.fromkeys(("Standard_NC6s_v3", "Standard_NC12s_v3", "Standard_NC24s_v3"), _V100),
    "Standard_ND40rs_v2": _V100,
    **dict.fromkeys(
        (
            "Standard_NC4as_T4_v3",
            "Standard_NC8as_T4_v3",
            "Standard_NC16as_T4_v3",
            "Standard_NC64as_T4_v3",
        ),
        _T4,
    ),
    **dict.fromkeys(
        (
            "Standard_NC24ads_A100_v4",
            "Standard_NC48ads_A100_v4",
            "Standard_NC96ads_A100_v4",
            "Standard_ND96asr_v4",
            "Standard_ND96amsr_A100_v4",
        ),
        _A100,
    ),
    **dict.fromkeys(
        (
            "Standard_NV6ads_A10_v5",
            "Standard_NV12ads_A10_v5",
            "Standard_NV18ads_A10_v5",
            "Standard_NV36ads_A10_v5",
            "Standard_NV36adms_A10_v5",
            "Standard_NV72ads_A10_v5",
        ),
        _A10,
    ),
    **dict.fromkeys(
        (
            "Standard_NC40ads_H100_v5",
            "Standard_NC80adis_H100_v5",
            "Standard_ND96is_H100_v5",
            "Standard_ND96isr_H100_v5",
        ),
        _H100,
    ),
}
# The SKU list writes names in capitals; Azure takes them in any case.
_GPU_OF_SIZE_LOWER = {size.lower(): gpu for size, gpu in _GPU_OF_SIZE.items()}

# The CUDA build is torch's CUDA 13.0 wheels (serving_image/constraints-cuda.txt): CUDA 13.0
# removed offline compilation and library support for compute capabilities below 7.5 (Maxwell,
# Pascal, Volta; NVIDIA CUDA 13.0 release notes, "Deprecated Architectures"), and torch's 13.0
# builds carry no kernels for them (pytorch/pytorch#157517). Change with the CUDA version.
CUDA_BUILD_MIN_COMPUTE_CAPABILITY = (7, 5)


def serving_gpu(instance_type: str) -> ServingGpu | None:
    """The GPU of a managed online size; None for a CPU size or one the SKU list lacks."""
    return _GPU_OF_SIZE_LOWER.get(instance_type.lower())


def cuda_build_runs_on(gpu: ServingGpu) -> bool:
    return gpu.compute_capability >= CUDA_BUILD_MIN_COMPUTE_CAPABILITY


def capability_text(capability: tuple[int, int]) -> str:
    """(7, 5) -> "7.5", as NVIDIA writes compute capabilities."""
    return ".".join(map(str, capability))
