"""The tags every taggable resource of a stack carries."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # runtime-free, so the policy pack can import the tag keys alone
    from phi3_infra.config import StackConfig

REQUIRED_TAG_KEYS = ("project", "stack", "owner", "expiresOn")


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
