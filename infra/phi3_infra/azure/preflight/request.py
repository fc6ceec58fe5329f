"""What the stack asks the preflight to check, validated when it is built."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from phi3_infra.azure.api_versions import (
    KEY_VAULT_API_VERSION,
    REGISTRY_API_VERSION,
    STORAGE_API_VERSION,
)
from phi3_infra.naming import SUBSCRIPTION_GUID

ML_PROVIDER = "Microsoft.MachineLearningServices"

# Network is not used directly, but Azure requires it registered for this workflow.
REQUIRED_PROVIDERS = (
    "Microsoft.MachineLearningServices",
    "Microsoft.Storage",
    "Microsoft.KeyVault",
    "Microsoft.ContainerRegistry",
    "Microsoft.ManagedIdentity",
    "Microsoft.Insights",
    "Microsoft.OperationalInsights",
    "Microsoft.Network",
)


_REGION = re.compile(r"^[a-z][a-z0-9]+$")


_SKU = re.compile(r"^Standard_[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class GlobalNameKind:
    """A resource type whose name is a global DNS name, and where ARM checks it."""

    label: str
    namespace: str
    collection: str
    api_version: str

    @property
    def resource_type(self) -> str:
        return f"{self.namespace}/{self.collection}"


# All three take POST /subscriptions/{s}/providers/{namespace}/checkNameAvailability with
# {"name", "type"} and answer {"nameAvailable", "reason", "message"} (azure-rest-api-specs:
# storage stable/2024-01-01 storage.json StorageAccounts_CheckNameAvailability; containerregistry
# stable/2023-07-01 Registries_CheckNameAvailability; keyvault stable/2023-07-01 keyvault.json
# Vaults_CheckNameAvailability). Keys are StackNames.globally_unique()'s.
GLOBAL_NAME_KINDS: Mapping[str, GlobalNameKind] = {
    "storage_account": GlobalNameKind(
        "storage account", "Microsoft.Storage", "storageAccounts", STORAGE_API_VERSION
    ),
    "container_registry": GlobalNameKind(
        "container registry", "Microsoft.ContainerRegistry", "registries", REGISTRY_API_VERSION
    ),
    "key_vault": GlobalNameKind("Key Vault", "Microsoft.KeyVault", "vaults", KEY_VAULT_API_VERSION),
}


@dataclass(frozen=True)
class ServingRequest:
    """The managed online deployment the stack will create or update."""

    instance_type: str
    instance_count: int
    # ARM id of the deployment this run serves from. When it exists (a re-run), its instances
    # already hold their quota, so they must not count against it again. A new model is a new
    # deployment (serving.py): the endpoint's other deployments keep serving, and holding their
    # quota, until traffic has moved to it, so both need quota at once.
    deployment_id: str = ""

    @property
    def deployment_name(self) -> str:
        return self.deployment_id.rsplit("/", 1)[-1]

    @property
    def endpoint_deployments(self) -> str:
        """The path that lists the endpoint's deployments (OnlineDeployments_List)."""
        return self.deployment_id.rsplit("/", 1)[0]


@dataclass(frozen=True)
class PreflightRequest:
    """What the stack will ask Azure for; validated on construction."""

    subscription_id: str
    regions: tuple[str, ...]
    # Training candidates, most preferred first; empty: the stack trains nothing.
    skus: tuple[str, ...] = ()
    training_nodes: int = 1
    low_priority: bool = False
    # The size this stack's existing training job already ran on (set by the program when the
    # job exists): it is reported as the choice and needs no quota, since nothing new runs.
    fixed_sku: str | None = None
    serving: ServingRequest | None = None
    key_vault_names: tuple[str, ...] = ()
    workspace_names: tuple[str, ...] = ()
    # Global DNS names the stack creates, by GLOBAL_NAME_KINDS key; free, or this stack's own.
    unique_names: dict[str, str] = field(default_factory=dict)
    # Where the stack's own resources live: a taken name that is ours there is not a conflict.
    resource_group: str = ""

    def __post_init__(self) -> None:
        problems = []
        if not SUBSCRIPTION_GUID.fullmatch(self.subscription_id):
            problems.append(f"subscription_id {self.subscription_id!r} is not a subscription GUID")
        if not self.regions:
            problems.append("regions is empty: name at least one Azure region, e.g. eastus2")
        problems += [
            f"region {region!r} is not an Azure region name (lowercase, no spaces, e.g. eastus2)"
            for region in self.regions
            if not _REGION.match(region)
        ]
        sizes = [*self.skus, *filter(None, [self.fixed_sku])]
        if self.serving is not None:
            sizes.append(self.serving.instance_type)
            if self.serving.instance_count < 1:
                problems.append(
                    f"serving instance_count is {self.serving.instance_count}; it must be at "
                    "least 1"
                )
        problems += [
            f"sku {sku!r} is not an Azure VM size name (Standard_...)"
            for sku in sizes
            if not _SKU.match(sku)
        ]
        if self.training_nodes < 1:
            problems.append(f"training_nodes is {self.training_nodes}; it must be at least 1")
        names = (*self.key_vault_names, *self.workspace_names, *self.unique_names.values())
        problems += ["a name to check is empty" for name in names if not name]
        problems += [
            f"unique_names kind {kind!r} is not one of {sorted(GLOBAL_NAME_KINDS)}"
            for kind in self.unique_names
            if kind not in GLOBAL_NAME_KINDS
        ]
        if problems:
            raise ValueError("invalid preflight request: " + "; ".join(problems))

    @property
    def trains(self) -> bool:
        return bool(self.skus or self.fixed_sku)
