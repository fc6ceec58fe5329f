"""FastAPI dependencies the routers declare with ``Annotated`` (FastAPI's recommended form).

All are ``async def``: FastAPI runs a plain ``def`` dependency in its thread pool, and each such
hop, on a core whose GIL the generation worker holds, delays the request (time to first token)."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Header, Request

from phi3_server.errors import APIError
from phi3_server.runtime import RETRY_AFTER_S, ModelRuntime, ServerState


async def server_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.phi3
    return state


State = Annotated[ServerState, Depends(server_state)]


async def ready_runtime(state: State) -> ModelRuntime:
    """The loaded model; 503 while it loads, and once its generation worker has stopped."""
    if state.runtime is None:
        raise APIError(
            503,
            "the model is still loading",
            code="model_loading",
            headers={"Retry-After": RETRY_AFTER_S},
        )
    require_worker_alive(state.runtime)
    return state.runtime


def require_worker_alive(runtime: ModelRuntime) -> None:
    """503 once the generation worker has stopped: Azure's probes then replace the container."""
    if not runtime.engine.alive:
        raise APIError(503, "the generation worker has stopped", code="worker_stopped")


ReadyModel = Annotated[ModelRuntime, Depends(ready_runtime)]


async def require_api_key(
    state: State, authorization: Annotated[str | None, Header()] = None
) -> None:
    api_key = state.settings.api_key
    if api_key is None:
        return
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(
        key.encode(), api_key.get_secret_value().encode()
    ):
        raise APIError(
            401,
            "missing or wrong API key: send 'Authorization: Bearer <key>'",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )


Authorized = [Depends(require_api_key)]
