"""One concurrent ARM read's outcome: its answer, or the ArmError it raised."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from phi3_infra.azure.arm import ArmError

_T = TypeVar("_T")


def outcome_of(job: Callable[[], _T]) -> _T | ArmError:
    try:
        return job()
    except ArmError as exc:
        return exc


def raise_if_unchecked(error: ArmError) -> None:
    """Auth, throttling and outages mean "could not check": never report them as "does not fit"."""
    if type(error) is not ArmError:
        raise error


def value_of(outcome: _T | ArmError) -> _T:
    if isinstance(outcome, ArmError):
        raise outcome
    return outcome
