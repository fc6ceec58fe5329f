"""Prometheus metrics and the request-size guard, as plain ASGI middleware (safe for streams)."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from phi3_server.errors import APIError

ROUTES = ("/v1/chat/completions", "/v1/models", "/score", "/health", "/ready", "/metrics")
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 90, 180)


class Metrics:
    """The server's metrics in a registry of its own (several apps may live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "phi3_requests", "HTTP requests answered", ["route", "status"], registry=self.registry
        )
        self.errors = Counter(
            "phi3_request_errors",
            "HTTP requests answered with 4xx/5xx",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "phi3_request_latency_seconds",
            "time to the end of the response",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "phi3_prompt_tokens", "prompt tokens of finished generations", registry=self.registry
        )
        self.completion_tokens = Counter(
            "phi3_completion_tokens", "tokens generated", registry=self.registry
        )
        self.batch_size = Histogram(
            "phi3_decode_batch_size",
            "sequences decoded together per step",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "phi3_queue_depth", "admitted requests waiting for a batch slot", registry=self.registry
        )
        self.running = Gauge(
            "phi3_running_sequences", "sequences in the running batch", registry=self.registry
        )

    def watch_engine(self, waiting: Callable[[], int], running: Callable[[], int]) -> None:
        self.queue_depth.set_function(waiting)
        self.running.set_function(running)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Unknown paths share one label, so scanners cannot blow up the series count.
        route = scope["path"] if scope["path"] in ROUTES else "other"
        status = 500
        started = time.perf_counter()

        async def send_and_record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record_status)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
            if status >= 400:
                self.metrics.errors.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)


class BodySizeLimit:
    """Reads the whole body (JSON requests are small) and answers 413 above ``max_bytes``,
    whether or not the client declared a Content-Length."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        too_large = APIError(
            413, f"request body is larger than {self.max_bytes} bytes", code="body_too_large"
        ).response()
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await too_large(scope, receive, send)
                return
            more = message.get("more_body", False)
        replayed = False

        async def replay_then_receive() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # later messages: disconnects while streaming
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay_then_receive, send)
