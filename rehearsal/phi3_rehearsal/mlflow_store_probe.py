"""Run as a script by the trainer image's interpreter (never imported: it refuses the network):
resolve MLflow's stores for MLFLOW_TRACKING_URI offline.

Prints, as JSON, the class and host of the tracking store and of the model-registry store that
MLflow builds for the environment's tracking URI: what `mlflow.start_run` (which transformers'
MLflowCallback calls in `setup`) constructs before its first request. Every socket is refused
first, so a store that needs the network to be built fails here.
"""

from __future__ import annotations

import json
import socket
from typing import Any


def _refuse(*_args: Any, **_kwargs: Any) -> Any:
    raise OSError("network refused by mlflow_store_probe")


socket.socket.connect = _refuse  # type: ignore[method-assign]
socket.getaddrinfo = _refuse
socket.create_connection = _refuse

from mlflow.tracking import MlflowClient  # noqa: E402  (after the network is refused)
from mlflow.tracking._model_registry.utils import _get_store as registry_store  # noqa: E402
from mlflow.tracking._tracking_service.utils import _get_store as tracking_store  # noqa: E402


def _describe(store: Any) -> dict[str, str]:
    kind = type(store)
    return {"store": f"{kind.__module__}.{kind.__qualname__}", "host": store.get_host_creds().host}


MlflowClient()  # start_run's first step; fails at once when a scheme has no store
print(
    json.dumps({"tracking": _describe(tracking_store()), "registry": _describe(registry_store())})
)
