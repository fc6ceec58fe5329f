"""The Azure public-cloud regions a stack may target (ARM location names)."""

from __future__ import annotations

import difflib

# ARM location names of the public cloud; sovereign clouds and restricted regions are left out
# on purpose because the provider, quota and role model differ there.
AZURE_PUBLIC_REGIONS: frozenset[str] = frozenset(
    {
        "australiacentral",
        "australiacentral2",
        "australiaeast",
        "australiasoutheast",
        "brazilsouth",
        "brazilsoutheast",
        "canadacentral",
        "canadaeast",
        "centralindia",
        "centralus",
        "eastasia",
        "eastus",
        "eastus2",
        "francecentral",
        "francesouth",
        "germanynorth",
        "germanywestcentral",
        "israelcentral",
        "italynorth",
        "japaneast",
        "japanwest",
        "koreacentral",
        "koreasouth",
        "mexicocentral",
        "newzealandnorth",
        "northcentralus",
        "northeurope",
        "norwayeast",
        "norwaywest",
        "polandcentral",
        "qatarcentral",
        "southafricanorth",
        "southafricawest",
        "southcentralus",
        "southeastasia",
        "southindia",
        "spaincentral",
        "swedencentral",
        "switzerlandnorth",
        "switzerlandwest",
        "uaecentral",
        "uaenorth",
        "uksouth",
        "ukwest",
        "westcentralus",
        "westeurope",
        "westindia",
        "westus",
        "westus2",
        "westus3",
    }
)


def normalize_region(value: str) -> str:
    """ARM location name for a display name or location name ('East US 2' -> 'eastus2')."""
    return "".join(value.split()).lower()


def region_error(value: str) -> str:
    """Message for an unknown region: the closest matches first, then every allowed value."""
    close = difflib.get_close_matches(normalize_region(value), AZURE_PUBLIC_REGIONS, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    allowed = ", ".join(sorted(AZURE_PUBLIC_REGIONS))
    return f"unknown Azure region {value!r}.{hint} Allowed: {allowed}"
