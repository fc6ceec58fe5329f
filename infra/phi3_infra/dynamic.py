"""Shared by the dynamic resources: steps `pulumi up` runs through the ARM client."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pulumi.dynamic


def replace_when_changed(
    olds: Mapping[str, Any],
    news: Mapping[str, Any],
    keys: Sequence[str],
    updated: Sequence[str] = (),
) -> pulumi.dynamic.DiffResult:
    """A step is redone (replaced) when what it acts on changes, and only then; a change of an
    `updated` key is applied in place (the provider's update)."""
    replaced = [key for key in keys if olds.get(key) != news.get(key)]
    changed = replaced + [key for key in updated if olds.get(key) != news.get(key)]
    return pulumi.dynamic.DiffResult(changes=bool(changed), replaces=replaced)
