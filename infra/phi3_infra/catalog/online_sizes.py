"""VM sizes Azure ML managed online endpoints accept, and the quota a deployment of them reserves.

Source: the "Managed online endpoints SKU list" (MicrosoftDocs/azure-ai-docs,
articles/machine-learning/reference-managed-online-endpoints-vm-sku-list.md): its "VM Size Name"
column is every size a managed online deployment may use, its "Skip 20% Reservation" column the
sizes exempt from the upgrade reserve. The reserve itself: "you must have a quota for
`ceil(1.2 * number of instances requested for deployment) * number of cores for the VM SKU`"
(articles/machine-learning/includes/quota-allocation-online-deployment.md, included by
how-to-manage-quotas.md, "Virtual machine quota allocation for deployment").

Azure ML's vmSizes API is no substitute: its `supportedComputeTypes` lists "MIR" for some sizes
(azure-rest-api-specs, machinelearningservices stable/2024-10-01 examples/VirtualMachineSize/
list.json), but no Azure document says what that value means; the SKU list is the documented one.
"""

from __future__ import annotations


def _sizes(pattern: str, *counts: int | str) -> list[str]:
    return [pattern.format(count) for count in counts]


# The table's rows, by family, as Azure spells the size names elsewhere (case does not matter).
_RESERVED = [
    *_sizes("Standard_D{}as_v4", 2, 4, 8, 16, 32, 48, 64, 96),
    *_sizes("Standard_D{}a_v4", 2, 4, 8, 16, 32, 48, 64, 96),
    *_sizes("Standard_DS{}_v2", 1, 2, 3, 4, 5),
    *_sizes("Standard_E{}s_v3", 2, 4, 8, 16, 32, 48, 64),
    *_sizes("Standard_F{}s_v2", 2, 4, 8, 16, 32, 48, 64, 72),
    *_sizes("Standard_FX{}mds", 4, 12, 24, 36, 48),
    *_sizes("Standard_L{}as_v3", 8, 16, 32, 48, 64, 80),
    *_sizes("Standard_L{}s_v2", 8, 16, 32, 48, 64, 80),
    *_sizes("Standard_L{}s_v3", 8, 16, 32, 48, 64, 80),
    *_sizes("Standard_NC{}as_T4_v3", 4, 8, 16, 64),
    *_sizes("Standard_NC{}s_v2", 6, 12, 24),
    *_sizes("Standard_NC{}s_v3", 6, 12, 24),
    *_sizes("Standard_NV{}_A10_v5", "6ads", "12ads", "18ads", "36ads", "36adms", "72ads"),
]
_RESERVE_EXEMPT = [
    *_sizes("Standard_NC{}ads_A100_v4", 24, 48, 96),
    "Standard_NC40ads_H100_v5",
    "Standard_NC80adis_H100_v5",
    "Standard_ND96amsr_A100_v4",
    "Standard_ND96asr_v4",
    "Standard_ND40rs_v2",
    "Standard_ND96is_H100_v5",
    "Standard_ND96isr_H100_v5",
]
MANAGED_ONLINE_SIZES = frozenset(size.lower() for size in (*_RESERVED, *_RESERVE_EXEMPT))
RESERVE_EXEMPT_SIZES = frozenset(size.lower() for size in _RESERVE_EXEMPT)


def offered_to_managed_online(instance_type: str) -> bool:
    return instance_type.lower() in MANAGED_ONLINE_SIZES


def reserve_exempt(instance_type: str) -> bool:
    return instance_type.lower() in RESERVE_EXEMPT_SIZES


def instances_reserved(instance_type: str, instances: int) -> int:
    """Instances' worth of quota a deployment needs: ceil(1.2 x instances), or exactly
    `instances` for an exempt size. Integer arithmetic: 1.2 * 10 is 12.000000000000002 in
    floating point, whose ceiling would be 13, not the documented 12."""
    if reserve_exempt(instance_type):
        return instances
    return (6 * instances + 4) // 5
