"""What the dynamic steps share: steps `pulumi up` runs through the ARM client.

Each step is a `Step` provider: it names the inputs whose change redoes it (a replacement: the
old step's delete runs, then the new one's create) and those its `update` applies in place; a
change of any other input is no change. Its inputs arrive as the engine's plain dict, read into
the step's dataclass with `inputs_of`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import pulumi.dynamic

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_Inputs = TypeVar("_Inputs", bound="DataclassInstance")


class Step(pulumi.dynamic.ResourceProvider):
    replaced_by: ClassVar[tuple[str, ...]] = ()
    updated_by: ClassVar[tuple[str, ...]] = ()

    def diff(
        self, _id: str, olds: dict[str, Any], news: dict[str, Any]
    ) -> pulumi.dynamic.DiffResult:
        replaced = [key for key in self.replaced_by if olds.get(key) != news.get(key)]
        updated = [key for key in self.updated_by if olds.get(key) != news.get(key)]
        return pulumi.dynamic.DiffResult(changes=bool(replaced or updated), replaces=replaced)


def inputs_of(props: Mapping[str, Any], kind: type[_Inputs]) -> _Inputs:
    """The step's dataclass from its stored inputs (outputs the step added are left out)."""
    return kind(**{field.name: props[field.name] for field in fields(kind)})
