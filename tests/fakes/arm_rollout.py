"""Routes of the fake ARM server for a blue/green rollout, next to the pipeline's endpoint GET and
PUT (arm_pipeline.py) and the online deployments of arm_server.py: an endpoint as
OnlineEndpoints_Get answers it, its keys (OnlineEndpoints_ListKeys), and the DELETE of a
deployment, refused while the deployment has traffic.

Answers start from the specs' examples (machinelearningservices stable/2022-10-01 examples/
OnlineEndpoint/get.json and listKeys.json); the refusal is the safe-rollout guide's rule ("You
cannot delete a deployment that has live traffic allocated to it", MicrosoftDocs/azure-ai-docs
articles/machine-learning/how-to-safely-rollout-online-endpoints.md), whose wire answer Azure does
not document: here a 400. OnlineDeployments_Delete answers 200 (or 204 when there is nothing to
delete), two of the statuses the spec lists.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.arm_pipeline import PipelineArm
from tests.fakes.arm_server import FakeArm
from tests.fakes.examples import example_response

ENDPOINT_GET = "machinelearningservices__2022-10-01__OnlineEndpoint__get"
LIST_KEYS = "machinelearningservices__2022-10-01__OnlineEndpoint__listKeys"
_ENDPOINT = (
    r"/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.MachineLearningServices"
    r"/workspaces/[^/]+/onlineEndpoints/(?P<endpoint>[^/]+)"
)


@dataclass
class RolloutArm:
    """An endpoint, its keys and its deployments' deletes, on top of `pipeline`'s routes."""

    pipeline: PipelineArm
    keys: dict[str, tuple[str, str]] = field(default_factory=dict)  # endpoint -> (primary, 2nd)
    deleted: list[str] = field(default_factory=list)  # deployment ids, in order

    def install(self) -> RolloutArm:
        fake = self.pipeline.fake
        fake.route("POST", _ENDPOINT + "/listKeys", self._list_keys)
        fake.route("DELETE", _ENDPOINT + r"/deployments/(?P<deployment>[^/]+)", self._delete)
        return self

    def add_endpoint(
        self, endpoint_id: str, *, scoring_uri: str, auth_mode: str, traffic: Mapping[str, int]
    ) -> None:
        """An existing endpoint (`auth_mode` as ARM spells it: Key or AADToken)."""
        name = endpoint_id.rsplit("/", 1)[-1]
        endpoint = example_response(ENDPOINT_GET)
        endpoint |= {
            "id": endpoint_id,
            "name": name,
            "type": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
            "location": "eastus2",
        }
        endpoint["properties"] |= {
            "scoringUri": scoring_uri,
            "authMode": auth_mode,
            "provisioningState": "Succeeded",
            "traffic": dict(traffic),
        }
        self.pipeline.endpoints[name] = endpoint
        self.keys[name] = (f"primary-key-of-{name}", f"secondary-key-of-{name}")

    def traffic(self, endpoint: str) -> dict[str, int]:
        return dict(self.pipeline.endpoints[endpoint]["properties"].get("traffic") or {})

    def _list_keys(self, fake: FakeArm, query: Any, m: re.Match[str]) -> tuple[int, Any]:
        if m["endpoint"] not in self.pipeline.endpoints:
            message = f"Online endpoint {m['endpoint']} was not found."
            return 404, {"error": {"code": "ResourceNotFound", "message": message}}
        primary, secondary = self.keys[m["endpoint"]]
        return 200, example_response(LIST_KEYS) | {"primaryKey": primary, "secondaryKey": secondary}

    def _delete(self, fake: FakeArm, query: Any, m: re.Match[str]) -> tuple[int, Any]:
        endpoint = self.pipeline.endpoints.get(m["endpoint"])
        share = self.traffic(m["endpoint"]).get(m["deployment"], 0) if endpoint else 0
        if share > 0:
            message = (
                f"Deployment {m['deployment']} has {share}% of the traffic of endpoint "
                f"{m['endpoint']}; set it to 0% before deleting the deployment."
            )
            return 400, {"error": {"code": "BadRequest", "message": message}}
        if fake.online_deployments.pop(m.string.lower(), None) is None:
            return 204, None
        self.deleted.append(m.string)
        return 200, None
