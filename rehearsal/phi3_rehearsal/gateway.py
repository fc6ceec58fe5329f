"""A local front end that treats requests as a managed online endpoint does before they reach
the deployment's container.

Documented rules (MicrosoftDocs/azure-ai-docs, articles/machine-learning/):
- Auth: the key, or a Microsoft Entra token in `aadToken` mode, travels as
  `Authorization: Bearer <key or token>` (how-to-authenticate-online-endpoint.md, "Score data
  using the key or token"); either key of a key endpoint is such a token (same article, "Get
  the key or token": DATA_PLANE_TOKEN from primaryKey, DATA_PLANE_TOKEN2 from secondaryKey).
  Without it, 401 (how-to-troubleshoot-online-endpoints.md, "HTTP status codes").
- 408 when the request takes longer than the deployment's `requestSettings.requestTimeout`
  (same table: "The model execution took longer than the timeout supplied in
  request_timeout_ms"). Time spent queued counts too: `maxQueueWait` is deprecated for managed
  online endpoints, "Now increase request_timeout_ms to account for any networking/queue
  delays" (reference-yaml-deployment-managed-online.md, RequestSettings), so it is ignored.
- 429 "Too many pending requests": at most 2 * max_concurrent_requests_per_instance *
  instance_count requests are processed in parallel, the rest are rejected at once (same table;
  RequestSettings: "the system will opt to fail fast"). The issue's "429 when more than
  max_concurrent_requests_per_instance are in flight" is not what the table says. Of the
  admitted requests the container gets at most max_concurrent_requests_per_instance at once
  ("The maximum number of concurrent requests per instance allowed"); the others wait in the
  queue that the deprecated maxQueueWait described (our reading of the two texts).
- 424 when the container answers anything but 200, with the headers
  `ms-azureml-model-error-statuscode` and `ms-azureml-model-error-reason` (same table; the
  reason's wording is not documented: here the HTTP reason phrase); the body is the
  container's (the public reports infra/README.md "Serving" cites show `{"detail":"Not
  Found"}`, a FastAPI 404, inside a 424).
- `POST <scoringUri>` (the endpoint's `/score`) reaches the container's scoring route
  (how-to-deploy-custom-container.md, "Scoring route").

Assumptions (no Azure account here to check; infra/README.md "Serving: what the endpoint
forwards"): the OpenAI routes under `/v1` pass through unchanged to the container; other paths
get 404 from the endpoint; the container never sees the caller's `Authorization` header (the
endpoint consumes it); a container that does not answer at all gives 502; the wording of the
endpoint's own error bodies. An Entra token's signature and audience are not checked (nothing
here can), only that one is sent. The rehearsal runs one instance, so instance_count is 1.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from http import HTTPStatus

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

SCORING_URI_PATH = "/score"
OPENAI_PREFIX = "/v1"
MODEL_ERROR_STATUS = "ms-azureml-model-error-statuscode"
MODEL_ERROR_REASON = "ms-azureml-model-error-reason"
# Connection-level headers (RFC 9110 7.6.1) and what the relay recomputes.
_NOT_RELAYED = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade"}
)
# The gateway's own server sets these on its answers.
_NOT_RELAYED_BACK = _NOT_RELAYED | {"date", "server"}
_START_TIMEOUT_S = 10.0


class AuthMode(StrEnum):
    """The endpoint's `properties.authMode` values this gateway rehearses (the ARM wire names)."""

    KEY = "Key"
    AAD_TOKEN = "AADToken"


@dataclass(frozen=True)
class EndpointRules:
    auth_mode: AuthMode
    keys: tuple[str, ...]  # the endpoint's keys (Key mode); empty for AADToken
    scoring_path: str  # the container's scoring route (inferenceConfig.scoringRoute.path)
    request_timeout_s: float
    max_concurrent_requests_per_instance: int

    @property
    def admitted_at_once(self) -> int:
        """Requests in the endpoint at once before it answers 429 (one instance)."""
        return 2 * self.max_concurrent_requests_per_instance


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": HTTPStatus(status).phrase, "message": message}}, status)


def _relayed(headers: httpx.Headers) -> dict[str, str]:
    """The container's answer headers that the gateway passes back."""
    return {name: value for name, value in headers.items() if name not in _NOT_RELAYED_BACK}


class Gateway:
    """The ASGI app: authorize, admit, forward to `upstream` within the deadline, map errors."""

    def __init__(self, rules: EndpointRules, upstream: str) -> None:
        self.rules, self.upstream = rules, upstream.rstrip("/")
        self._admitted = 0
        self._forwarding = asyncio.Semaphore(rules.max_concurrent_requests_per_instance)
        self._client: httpx.AsyncClient | None = None
        self.app = Starlette(
            routes=[Route("/{path:path}", self._handle, methods=["GET", "POST", "PUT", "DELETE"])],
            lifespan=self._lifespan,
        )

    @property
    def admitted(self) -> int:
        """Requests in the endpoint now: at the container or queued for it."""
        return self._admitted

    @asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        # Deadlines are the gateway's own (asyncio timeouts), not the client's.
        async with httpx.AsyncClient(timeout=None) as client:
            self._client = client
            yield

    def _container_path(self, path: str) -> str | None:
        if path == SCORING_URI_PATH:
            return self.rules.scoring_path
        if path == OPENAI_PREFIX or path.startswith(f"{OPENAI_PREFIX}/"):
            return path  # assumed pass-through (module docstring)
        return None

    def _refusal(self, request: Request) -> Response | None:
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and credential:
            if self.rules.auth_mode is AuthMode.AAD_TOKEN:
                return None
            given = credential.encode()
            if any(secrets.compare_digest(given, key.encode()) for key in self.rules.keys):
                return None
        wanted = "key" if self.rules.auth_mode is AuthMode.KEY else "Microsoft Entra token"
        return _error(401, f"send the endpoint's {wanted} as 'Authorization: Bearer <{wanted}>'")

    async def _handle(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        container_path = self._container_path(request.url.path)
        if container_path is None:
            return _error(404, f"the endpoint forwards {SCORING_URI_PATH} and {OPENAI_PREFIX}/*")
        if self._admitted >= self.rules.admitted_at_once:
            return _error(429, "Too many pending requests")
        self._admitted += 1
        return await self._forward(request, container_path)

    async def _forward(self, request: Request, container_path: str) -> Response:
        """The admitted request to the container and its answer back, within the request
        timeout; the admission (and the forwarding slot) is released however it ends."""
        deadline = asyncio.get_running_loop().time() + self.rules.request_timeout_s
        forwarding = False
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._admitted -= 1
                if forwarding:
                    self._forwarding.release()

        try:
            body = await request.body()
            async with asyncio.timeout_at(deadline):
                await self._forwarding.acquire()
                forwarding = True
                answer = await self._send(request, container_path, body)
        except TimeoutError:
            release()
            return self._timed_out()
        except httpx.TransportError as error:
            release()
            return _error(502, f"the deployment's container did not answer: {error}")
        except BaseException:
            release()
            raise
        if _is_event_stream(answer):
            return _RelayedEvents(answer, deadline, release)
        try:
            async with asyncio.timeout_at(deadline):
                content = await answer.aread()
        except TimeoutError:
            return self._timed_out()
        finally:
            await answer.aclose()
            release()
        return _endpoint_answer(answer, content)

    def _timed_out(self) -> Response:
        return _error(
            408, f"no answer within the request timeout ({self.rules.request_timeout_s:g} s)"
        )

    async def _send(self, request: Request, path: str, body: bytes) -> httpx.Response:
        assert self._client is not None, "the gateway's lifespan has not started"
        headers = {
            name: value
            for name, value in request.headers.items()
            if name not in _NOT_RELAYED and name != "authorization"
        }
        outgoing = self._client.build_request(
            request.method,
            f"{self.upstream}{path}",
            params=request.url.query,
            headers=headers,
            content=body,
        )
        return await self._client.send(outgoing, stream=True)


def _endpoint_answer(answer: httpx.Response, content: bytes) -> Response:
    """The container's answer as the endpoint gives it: 200 as it is, anything else as 424 with
    the container's status and reason in headers."""
    if answer.status_code == 200:
        return Response(content, 200, _relayed(answer.headers))
    headers = _relayed(answer.headers) | {
        MODEL_ERROR_STATUS: str(answer.status_code),
        MODEL_ERROR_REASON: answer.reason_phrase,
    }
    return Response(content, 424, headers)


def _is_event_stream(answer: httpx.Response) -> bool:
    """Server-sent events are relayed as they come; anything else whole, so that an answer
    still incomplete at the deadline is a clean 408."""
    content_type = answer.headers.get("content-type", "")
    return answer.status_code == 200 and content_type.startswith("text/event-stream")


class _RelayedEvents(StreamingResponse):
    """The container's event stream, cut at the request deadline; the admission slot is freed
    however the stream ends, even if the client left before it started."""

    def __init__(
        self, answer: httpx.Response, deadline: float, release: Callable[[], None]
    ) -> None:
        super().__init__(self._until(answer, deadline), 200, _relayed(answer.headers))
        self._answer, self._release = answer, release

    @staticmethod
    async def _until(answer: httpx.Response, deadline: float) -> AsyncIterator[bytes]:
        chunks = answer.aiter_raw()
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    chunk = await anext(chunks)
            except (StopAsyncIteration, TimeoutError):
                return
            yield chunk

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._answer.aclose()
            self._release()


class BackgroundServer:
    """uvicorn serving an ASGI app on 127.0.0.1 (a free port) in a daemon thread."""

    def __init__(self, app: Starlette, name: str) -> None:
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        )
        self._thread = threading.Thread(target=self._server.run, name=name, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start on 127.0.0.1")
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=_START_TIMEOUT_S)


def start_gateway(rules: EndpointRules, upstream: str) -> BackgroundServer:
    """The gateway in front of `upstream` (the container's base URL), listening until stopped."""
    return BackgroundServer(Gateway(rules, upstream).app, name="endpoint-gateway")
