"""Deterministic Azure names, valid for each resource type and unique across stacks, regions and
subscriptions.

Every name ends in a short hash of (subscription, prefix, project, stack, region, generation):
re-running a stack gives the same names, and two stacks, regions or subscriptions never share
them. The subscription is what makes the global DNS names (storage account, registry, Key Vault)
differ between two teams that follow the same README with the same stack name: Bicep's
convention `uniqueString(subscription().id, ...)` (Learn: azure-resource-manager/bicep/
bicep-functions-string.md, "uniqueString"). That page also says such a hash "isn't globally
unique", which is why the preflight still asks Azure whether each global name is free.

Why `nameGeneration` is in the hash: a destroyed Key Vault keeps its name reserved while it is
soft-deleted (forever with purge protection on), and a deleted workspace blocks its name for 14
days unless purged. When one of those names is blocked, the user bumps the generation to get a
complete set of fresh names instead of waiting or hand-editing names.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from phi3_infra.config import StackConfig

SUFFIX_LENGTH = 8
_STACK_SLUG_MAX = 24
SUBSCRIPTION_GUID = re.compile(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")


@dataclass(frozen=True)
class StackNames:
    """The Azure name of every resource one stack creates."""

    resource_group: str
    storage_account: str
    key_vault: str
    container_registry: str
    log_analytics: str
    app_insights: str
    hub: str
    project: str
    identity: str
    endpoint_identity: str
    online_endpoint: str  # DNS label <name>.<region>.inference.ml.azure.com: unique per region

    def globally_unique(self) -> dict[str, str]:
        """Names that must be free across all of Azure (DNS names), by resource kind."""
        return {
            "storage_account": self.storage_account,
            "key_vault": self.key_vault,
            "container_registry": self.container_registry,
        }

    def soft_deletable(self) -> dict[str, str]:
        """Names a soft-deleted resource can keep reserved after `pulumi destroy`."""
        return {"key_vault": self.key_vault, "hub": self.hub, "project": self.project}


def name_suffix(config: StackConfig, project: str, stack: str, subscription_id: str) -> str:
    if not SUBSCRIPTION_GUID.fullmatch(subscription_id):
        raise ValueError(f"subscription id {subscription_id!r} is not a subscription GUID")
    # subscription().id's form; GUIDs compare case-insensitively, so the hash must too.
    scope = f"/subscriptions/{subscription_id.lower()}"
    seed = "|".join(
        (scope, config.name_prefix, project, stack, config.location, str(config.name_generation))
    )
    return hashlib.sha256(seed.encode()).hexdigest()[:SUFFIX_LENGTH]


def _stack_slug(stack: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", stack.lower()).strip("-")
    return slug[:_STACK_SLUG_MAX].rstrip("-") or "stack"


def stack_names(config: StackConfig, project: str, stack: str, subscription_id: str) -> StackNames:
    """All names for one stack in one subscription. The prefix rule (2-10 [a-z0-9]) keeps each
    within its limits."""
    prefix, suffix, slug = (
        config.name_prefix,
        name_suffix(config, project, stack, subscription_id),
        _stack_slug(stack),
    )
    return StackNames(
        resource_group=f"rg-{prefix}-{slug}-{suffix}",
        storage_account=f"{prefix}st{suffix}",
        key_vault=f"{prefix}-kv-{suffix}",
        container_registry=f"{prefix}acr{suffix}",
        log_analytics=f"log-{prefix}-{slug}-{suffix}",
        app_insights=f"appi-{prefix}-{slug}-{suffix}",
        hub=f"hub-{prefix}-{suffix}",
        project=f"proj-{prefix}-{suffix}",
        identity=f"id-{prefix}-{slug}-{suffix}",
        endpoint_identity=f"id-{prefix}-{slug}-{suffix}-endpoint",
        online_endpoint=f"ep-{prefix}-{suffix}",
    )
