"""The tags every taggable resource of a stack carries (the policy pack requires four of them:
infra/policy/phi3_policy.py, REQUIRED_TAG_KEYS)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from phi3_infra.config import StackConfig


def stack_tags(config: StackConfig, project: str, stack: str) -> dict[str, str]:
    tags = {
        "project": project,
        "stack": stack,
        "owner": config.owner,
        "expiresOn": config.expires_on.isoformat(),
        "managedBy": "pulumi",
    }
    if config.cost_center is not None:
        tags["costCenter"] = config.cost_center
    return tags
