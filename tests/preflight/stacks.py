"""What the preflight tests ask for: a stack's training candidates, global names and serving size,
in the shapes the program builds them (the names follow naming.py's patterns; any valid name
does)."""

from __future__ import annotations

from typing import Any

from phi3_infra.azure.preflight import PreflightRequest, ServingRequest
from tests.fakes.arm_server import SUBSCRIPTION_ID

NC24, H100_40 = "Standard_NC24ads_A100_v4", "Standard_NC40ads_H100_v5"
ESV3 = "standardESv3Family"
E4S = "Standard_E4s_v3"
STORAGE, REGISTRY, VAULT = (
    "Microsoft.Storage/storageAccounts",
    "Microsoft.ContainerRegistry/registries",
    "Microsoft.KeyVault/vaults",
)
GROUP = "rg-phi3-eastus2-1a2b3c4d"
NAMES = {
    "storage_account": "phi3st1a2b3c4d",
    "container_registry": "phi3acr1a2b3c4d",
    "key_vault": "phi3-kv-1a2b3c4d",
}
DEPLOYMENT_ID = (
    f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{GROUP}/providers/"
    "Microsoft.MachineLearningServices/workspaces/proj-phi3-1a2b3c4d/onlineEndpoints/"
    "ep-phi3-1a2b3c4d/deployments/phi3"
)


def request(
    regions: tuple[str, ...] = ("eastus2",),
    skus: tuple[str, ...] = (NC24, H100_40),
    training_nodes: int = 1,
    **extra: Any,
) -> PreflightRequest:
    return PreflightRequest(SUBSCRIPTION_ID, regions, skus, training_nodes, **extra)


def serving(
    instances: int = 1, size: str = E4S, deployment_id: str = "", **extra: Any
) -> PreflightRequest:
    """A stack that serves `instances` of `size` and trains nothing."""
    return request(skus=(), serving=ServingRequest(size, instances, deployment_id), **extra)


def named(**extra: Any) -> PreflightRequest:
    """A stack that creates its three global names in GROUP (and trains and serves nothing)."""
    return request(skus=(), unique_names=NAMES, resource_group=GROUP, **extra)
