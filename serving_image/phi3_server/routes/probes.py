"""Azure ML's liveness and readiness probes, and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from phi3_server.dependencies import Authorized, ReadyModel, State, require_worker_alive

router = APIRouter()


@router.get("/health")
async def health(state: State) -> dict[str, str]:
    """Alive while loading; 503 once a loaded model's generation worker has stopped, so that
    Azure restarts the container instead of routing requests to a server that cannot answer."""
    if state.runtime is not None:
        require_worker_alive(state.runtime)
    return {"status": "alive"}


@router.get("/ready")
async def ready(model: ReadyModel) -> dict[str, str]:
    return {"status": "ready"}


@router.get("/metrics", dependencies=Authorized)
async def prometheus_metrics(state: State) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
