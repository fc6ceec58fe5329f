"""The endpoint gateway's rules against a stand-in container (no model): each rule's source is in
phi3_rehearsal/gateway.py's docstring (MicrosoftDocs/azure-ai-docs, articles/machine-learning/
how-to-troubleshoot-online-endpoints.md "HTTP status codes", how-to-authenticate-online-endpoint.md,
reference-yaml-deployment-managed-online.md "RequestSettings")."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from phi3_rehearsal.gateway import AuthMode, BackgroundServer, EndpointRules, Gateway

KEYS = ("primary-key", "secondary-key")
BEARER = {"Authorization": f"Bearer {KEYS[0]}"}


class Container:
    """A container answering like a scoring server would, recording what reaches it."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.in_flight = 0
        self.most_in_flight = 0
        self.seen: list[tuple[str, str, str | None]] = []  # method, path, Authorization
        self.app = Starlette(
            routes=[
                Route("/invocations", self.score, methods=["POST"]),
                Route("/v1/held", self.held, methods=["POST"]),
                Route("/v1/slow", self.slow),
                Route("/v1/fails", self.fails),
                Route("/v1/events", self.events),
            ]
        )

    def _record(self, request: Request) -> None:
        self.seen.append((request.method, request.url.path, request.headers.get("authorization")))

    async def score(self, request: Request) -> Response:
        self._record(request)
        return JSONResponse({"scored": await request.json()})

    async def held(self, request: Request) -> Response:
        """Answers once the test releases it, counting how many wait here at once."""
        self._record(request)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            while not self.release.is_set():
                await asyncio.sleep(0.01)
        finally:
            self.in_flight -= 1
        return PlainTextResponse("done")

    async def slow(self, request: Request) -> Response:
        await asyncio.sleep(float(request.query_params["seconds"]))
        return PlainTextResponse("late")

    async def fails(self, request: Request) -> Response:
        return JSONResponse({"detail": "Not Found"}, status_code=404)

    async def events(self, request: Request) -> Response:
        async def stream() -> AsyncIterator[str]:
            for number in range(3):
                yield f"data: {number}\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")


@pytest.fixture
def container() -> Iterator[tuple[Container, str]]:
    stand_in = Container()
    server = BackgroundServer(stand_in.app, name="stand-in-container")
    try:
        yield stand_in, server.url
    finally:
        stand_in.release.set()
        server.stop()


def rules(**changes: object) -> EndpointRules:
    values: dict[str, object] = {
        "auth_mode": AuthMode.KEY,
        "keys": KEYS,
        "scoring_path": "/invocations",
        "request_timeout_s": 5.0,
        "max_concurrent_requests_per_instance": 2,
    }
    return EndpointRules(**(values | changes))  # type: ignore[arg-type]


@pytest.fixture
def endpoint(
    request: pytest.FixtureRequest, container: tuple[Container, str]
) -> Iterator[tuple[Gateway, str]]:
    """The gateway in front of the stand-in, with `rules(**param)`, and its URL."""
    gateway = Gateway(rules(**getattr(request, "param", {})), container[1])
    running = BackgroundServer(gateway.app, name="endpoint-gateway")
    try:
        yield gateway, running.url
    finally:
        running.stop()


@pytest.fixture
def gateway(endpoint: tuple[Gateway, str]) -> str:
    return endpoint[1]


def test_scoring_uri_reaches_the_scoring_route(
    gateway: str, container: tuple[Container, str]
) -> None:
    response = httpx.post(f"{gateway}/score", json={"input_data": ["hi"]}, headers=BEARER)
    assert response.status_code == 200, response.text
    assert response.json() == {"scored": {"input_data": ["hi"]}}
    # The endpoint consumes the key: the container has none of its own (infra/README.md).
    assert container[0].seen == [("POST", "/invocations", None)]


@pytest.mark.parametrize("key", KEYS)
def test_either_endpoint_key_is_accepted(gateway: str, key: str) -> None:
    response = httpx.post(f"{gateway}/score", json={}, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEYS[0]}, {"api-key": KEYS[0]}],
)
def test_key_endpoint_refuses_without_its_key(
    gateway: str, container: tuple[Container, str], headers: dict[str, str]
) -> None:
    assert httpx.post(f"{gateway}/score", json={}, headers=headers).status_code == 401
    assert container[0].seen == []


@pytest.mark.parametrize("endpoint", [{"auth_mode": AuthMode.AAD_TOKEN, "keys": ()}], indirect=True)
def test_aad_token_endpoint_needs_a_bearer_token(gateway: str) -> None:
    assert httpx.post(f"{gateway}/score", json={}).status_code == 401
    assert httpx.post(f"{gateway}/score", json={}, headers=BEARER).status_code == 200


def test_paths_other_than_score_and_v1_are_not_forwarded(
    gateway: str, container: tuple[Container, str]
) -> None:
    assert httpx.post(f"{gateway}/invocations", json={}, headers=BEARER).status_code == 404
    assert container[0].seen == []


def test_container_error_is_424_with_its_status_and_body(gateway: str) -> None:
    response = httpx.get(f"{gateway}/v1/fails", headers=BEARER)
    assert response.status_code == 424
    assert response.headers["ms-azureml-model-error-statuscode"] == "404"
    assert response.headers["ms-azureml-model-error-reason"] == "Not Found"
    assert response.json() == {"detail": "Not Found"}


@pytest.mark.parametrize("endpoint", [{"request_timeout_s": 0.3}], indirect=True)
def test_request_timeout_is_408(gateway: str) -> None:
    late = httpx.get(f"{gateway}/v1/slow", params={"seconds": 1}, headers=BEARER, timeout=10)
    assert late.status_code == 408
    in_time = httpx.get(f"{gateway}/v1/slow", params={"seconds": 0}, headers=BEARER)
    assert in_time.status_code == 200 and in_time.text == "late"


def test_event_streams_pass_through(gateway: str) -> None:
    response = httpx.get(f"{gateway}/v1/events", headers=BEARER)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text == "data: 0\n\ndata: 1\n\ndata: 2\n\n"


@pytest.mark.parametrize("endpoint", [{"max_concurrent_requests_per_instance": 2}], indirect=True)
def test_429_beyond_twice_the_concurrency_and_the_container_sees_at_most_it(
    endpoint: tuple[Gateway, str], container: tuple[Container, str]
) -> None:
    gateway, url = endpoint
    stand_in = container[0]
    with ThreadPoolExecutor(max_workers=4) as pool:
        held = [
            pool.submit(httpx.post, f"{url}/v1/held", headers=BEARER, timeout=10)
            for _ in range(4)  # 2 x 2 admitted: two at the container, two queued
        ]
        while gateway.admitted < 4 or stand_in.in_flight < 2:
            threading.Event().wait(0.01)
        refused = httpx.post(f"{url}/v1/held", headers=BEARER, timeout=10)
        stand_in.release.set()
        answers = [future.result() for future in held]
    assert refused.status_code == 429
    assert [answer.status_code for answer in answers] == [200] * 4
    assert stand_in.most_in_flight == 2
    # Slots are given back: the next request is admitted again.
    assert gateway.admitted == 0
    assert httpx.post(f"{url}/v1/held", headers=BEARER, timeout=10).status_code == 200
