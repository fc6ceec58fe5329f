"""A local HTTPS server standing for a managed online endpoint's scoring URI, each of its
deployments answering as scripted.

What it applies, as the endpoint does (MicrosoftDocs/azure-ai-docs articles/machine-learning/):
the caller's key or Entra token as `Authorization: Bearer <...>`, else 401
(how-to-authenticate-online-endpoint.md; how-to-troubleshoot-online-endpoints.md, "HTTP status
codes"); a request with `azureml-model-deployment: <name>` reaches that deployment whatever the
traffic rules (how-to-safely-rollout-online-endpoints.md, "Test the new deployment"); a container
answer other than 200 comes back as 424 with `ms-azureml-model-error-statuscode` (same "HTTP
status codes" table). A request without the header is refused here: the stand-in does not model
traffic rules. Every request is recorded with the time it arrived.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

DEPLOYMENT_HEADER = "azureml-model-deployment"
MODEL_ERROR_STATUS = "ms-azureml-model-error-statuscode"


@dataclass(frozen=True)
class ContainerAnswer:
    """What a deployment's container answers its scoring route."""

    status: int
    body: Any


@dataclass(frozen=True)
class ScoringCall:
    deployment: str | None
    authorization: str | None
    body: Any
    at: float  # time.perf_counter() on arrival, as FakeArm records its calls


@dataclass
class ScoringEndpoint:
    credentials: set[str]  # bearer values the endpoint accepts
    answers: dict[str, ContainerAnswer] = field(default_factory=dict)  # by deployment name
    calls: list[ScoringCall] = field(default_factory=list)
    url: str = ""

    @property
    def scoring_uri(self) -> str:
        return f"{self.url}/score"

    def answer(
        self, deployment: str | None, authorization: str | None
    ) -> tuple[int, Any, dict[str, str]]:
        if authorization not in {f"Bearer {credential}" for credential in self.credentials}:
            return 401, {"message": "key or token missing or invalid"}, {}
        if deployment is None or deployment not in self.answers:
            return 404, {"message": f"no deployment {deployment!r} on this endpoint"}, {}
        container = self.answers[deployment]
        if container.status == 200:
            return 200, container.body, {}
        return 424, container.body, {MODEL_ERROR_STATUS: str(container.status)}


@contextmanager
def scoring_endpoint(
    tls_dir: Path, credentials: set[str], answers: dict[str, ContainerAnswer]
) -> Iterator[ScoringEndpoint]:
    """Serve on 127.0.0.1 with the certificate the fake ARM server wrote to `tls_dir` (its CA is
    the one the tests' clients trust)."""
    endpoint = ScoringEndpoint(set(credentials), dict(answers))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            deployment = self.headers.get(DEPLOYMENT_HEADER)
            authorization = self.headers.get("Authorization")
            body = json.loads(raw) if raw else None
            endpoint.calls.append(ScoringCall(deployment, authorization, body, time.perf_counter()))
            headers: dict[str, str]
            if self.path != "/score":
                status, answer, headers = 404, {"message": f"no route {self.path}"}, {}
            else:
                status, answer, headers = endpoint.answer(deployment, authorization)
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_dir / "cert.pem", tls_dir / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    endpoint.url = f"https://127.0.0.1:{server.server_address[1]}"
    try:
        yield endpoint
    finally:
        server.shutdown()
        server.server_close()
