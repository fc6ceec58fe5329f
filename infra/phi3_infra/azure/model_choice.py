"""Which registered model version the stack serves, decided when the program is planned.

In this order:

1. `modelReference`, with or without 'train': a rollback (`azureml:<an earlier job>:1`, kept by
   every retrain: components/training.py) or a model trained elsewhere;
2. the model this run registers from the training job (after the wait, or once Azure reports the
   job Completed when the stack does not wait);
3. otherwise the job has not completed yet (`waitForTraining: false`): what the endpoint serves
   now, read from Azure, so a retrain in progress never takes the served model away;
4. otherwise nothing yet: the first submission of a stack that has never served.

Plain strings at plan time, because serving derives the deployment's Azure name from them
(components/serving.py `deployment_name`) and the preflight checks that deployment's quota before
anything is created.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from phi3_infra.azure.api_versions import ML_API_VERSION
from phi3_infra.azure.arm import ArmClient, ArmNotFoundError

# A deployment's `model` (ManagedOnlineDeployment, ML REST spec): the model version's ARM id, as
# components/serving.py sends it, or the `azureml:<name>:<version>` short form the CLI and studio
# accept.
_MODEL_ID = re.compile(r"/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)/?$", re.IGNORECASE)
_MODEL_SHORT = re.compile(r"^azureml:(?P<name>[^:/@]+):(?P<version>[^:/@]+)$")


class ModelVersion(NamedTuple):
    name: str
    version: str


def model_of(model_id: str) -> ModelVersion | None:
    """The model version a deployment's `model` names; None for a form it cannot be read from
    (a registry's model, a plain URI)."""
    match = _MODEL_ID.search(model_id) or _MODEL_SHORT.match(model_id)
    return ModelVersion(match["name"], match["version"]) if match else None


def live_model(client: ArmClient, endpoint_path: str) -> ModelVersion | None:
    """The model the endpoint at ARM `endpoint_path` serves now: that of the deployment with the
    largest traffic share (OnlineEndpoint `properties.traffic`, deployment name -> percent); None
    when there is no endpoint yet or nothing receives traffic."""
    try:
        endpoint = client.get_json(endpoint_path, ML_API_VERSION)
    except ArmNotFoundError:
        return None
    traffic = (endpoint.get("properties") or {}).get("traffic") or {}
    shares = {name: int(share) for name, share in traffic.items() if int(share) > 0}
    if not shares:
        return None
    serving = max(shares, key=lambda name: shares[name])
    try:
        deployment = client.get_json(f"{endpoint_path}/deployments/{serving}", ML_API_VERSION)
    except ArmNotFoundError:
        return None
    return model_of(str((deployment.get("properties") or {}).get("model") or ""))
