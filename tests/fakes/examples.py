"""Azure REST API examples recorded from Azure/azure-rest-api-specs (see spec_examples/README.md):
the fakes start every answer from one of them and change only what the scenario decides."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).with_name("spec_examples")


@cache
def _load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EXAMPLES / f"{name}.json").read_text())
    return loaded


def example_response(name: str, status: str = "200") -> dict[str, Any]:
    """A fresh copy of the example's response body for `status`."""
    return copy.deepcopy(_load(name)["responses"][status]["body"])


def example_answer(name: str, status: str) -> tuple[int, Any, dict[str, str]]:
    """The example's whole answer for `status`, as a fake route returns it: the status code, a
    copy of the body (None where the example has none) and the headers it lists."""
    response = _load(name)["responses"][status]
    return int(status), copy.deepcopy(response.get("body")), dict(response.get("headers", {}))


def command_job(
    arm_id: str, *, status: str, instance_type: str, instance_count: int = 1, **properties: Any
) -> dict[str, Any]:
    """A command job as ARM's Jobs_Get returns it (2025-06-01 CommandJob/get.json), in `status`,
    sized for serverless compute (no computeId: how-to-use-serverless-compute.md)."""
    job = example_response("machinelearningservices__2025-06-01__Job__CommandJob__get")
    job |= {"id": arm_id, "name": arm_id.rsplit("/", 1)[-1]}
    body = job["properties"]
    del body["computeId"]
    body["status"] = status
    body["resources"] = {"instanceType": instance_type, "instanceCount": instance_count}
    body.update(properties)
    return job
