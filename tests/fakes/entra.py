"""A fake Microsoft Entra ID token service, so azure-identity's real credentials sign in to it.

It lives on the fake ARM server (same TLS CA); point AZURE_AUTHORITY_HOST at the server. Routes
and bodies follow the Microsoft identity platform docs:
- MicrosoftDocs/azure-docs articles/active-directory/develop/v2-protocols-oidc.md: the metadata
  document at `GET /{tenant}/v2.0/.well-known/openid-configuration` (authorization_endpoint,
  token_endpoint, token_endpoint_auth_methods_supported, jwks_uri), which MSAL reads before its
  first token request.
- .../v2-oauth2-client-creds-grant-flow.md: `POST /{tenant}/oauth2/v2.0/token`, form-encoded,
  grant_type=client_credentials, client_id, scope `<resource>/.default`, and either client_secret
  or client_assertion_type `urn:ietf:params:oauth:client-assertion-type:jwt-bearer` with
  client_assertion (a federated token, as ClientAssertionCredential sends it); the answer
  `{"token_type": "Bearer", "expires_in": 3599, "access_token": ...}`.
- MicrosoftDocs/entra-docs docs/identity-platform/reference-error-codes.md: the error body
  (error, error_description "AADSTS...: ...", error_codes, timestamp, trace_id, correlation_id)
  and the codes used here (90002 tenant not found, 700016 application not found, 7000215 invalid
  client secret, 50013 invalid assertion); invalid_client answers 401 (RFC 6749 section 5.2).

The access token it issues is the one the fake ARM accepts, so a call that reaches ARM proves the
token came from this sign-in. `github_oidc` fakes the token endpoint GitHub Actions gives a job.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.arm_server import FakeArm

TENANT_ID = "00000000-0000-4000-8000-0000000000aa"
CLIENT_ID = "00000000-0000-4000-8000-0000000000bb"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_FORM_FIELDS = ("grant_type", "client_id", "scope", "client_secret", "client_assertion_type")


@dataclass(frozen=True)
class TokenRequest:
    tenant: str
    form: dict[str, str]  # without the secret or assertion, which a test must never print


@dataclass
class FakeEntra:
    """One application registration: a client secret, a federated token, or both."""

    arm: FakeArm
    tenant_id: str = TENANT_ID
    client_id: str = CLIENT_ID
    client_secret: str | None = None
    federated_token: str | None = None
    requests: list[TokenRequest] = field(default_factory=list)

    def install(self) -> FakeEntra:
        tenant = r"/(?P<tenant>[^/]+)"
        metadata = rf"{tenant}/v2\.0/\.well-known/openid-configuration"
        self.arm.route_with_body("GET", metadata, self._metadata, anonymous=True)
        self.arm.route_with_body(
            "POST", rf"{tenant}/oauth2/v2\.0/token", self._token, anonymous=True
        )
        return self

    @property
    def authority_host(self) -> str:
        return self.arm.url

    def _metadata(
        self, fake: FakeArm, query: dict[str, list[str]], m: re.Match[str], body: bytes
    ) -> tuple[int, Any]:
        base = f"{fake.url}/{m['tenant']}"
        return 200, {
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "issuer": f"{base}/v2.0",
        }

    def _token(
        self, fake: FakeArm, query: dict[str, list[str]], m: re.Match[str], body: bytes
    ) -> tuple[int, Any]:
        form = {key: values[0] for key, values in parse_qs(body.decode()).items()}
        self.requests.append(
            TokenRequest(m["tenant"], {k: v for k, v in form.items() if k in _FORM_FIELDS})
        )
        if m["tenant"] != self.tenant_id:
            return 400, _error("invalid_request", 90002, f"Tenant '{m['tenant']}' not found.")
        if form.get("grant_type") != "client_credentials":
            return 400, _error("unsupported_grant_type", 70003, "The grant type is not supported.")
        if form.get("client_id") != self.client_id:
            message = f"Application with identifier '{form.get('client_id')}' was not found."
            return 400, _error("unauthorized_client", 700016, message)
        if "client_assertion" in form:
            if form.get("client_assertion_type") != JWT_BEARER or (
                form["client_assertion"] != self.federated_token
            ):
                return 401, _error("invalid_client", 50013, "Assertion is invalid.")
        elif form.get("client_secret") != self.client_secret or self.client_secret is None:
            return 401, _error("invalid_client", 7000215, "Invalid client secret provided.")
        return 200, {"token_type": "Bearer", "expires_in": 3599, "access_token": fake.token}


def _error(error: str, code: int, message: str) -> dict[str, Any]:
    trace = "0000aaaa-11bb-cccc-dd33-eeeeee333333"
    correlation = "aaaa0000-bb11-2222-33cc-444444dddddd"
    timestamp = "2026-12-01 10:00:00Z"
    return {
        "error": error,
        "error_description": f"AADSTS{code}: {message}\r\nTrace ID: {trace}\r\n"
        f"Correlation ID: {correlation}\r\nTimestamp: {timestamp}",
        "error_codes": [code],
        "timestamp": timestamp,
        "trace_id": trace,
        "correlation_id": correlation,
    }


@dataclass
class GitHubOidc:
    """The job's token endpoint: ACTIONS_ID_TOKEN_REQUEST_URL answers `{"value": <token>}` to a
    GET with `audience` and `Authorization: bearer <ACTIONS_ID_TOKEN_REQUEST_TOKEN>` (GitHub docs,
    "About security hardening with OpenID Connect", updating your actions for OIDC)."""

    request_token: str
    id_token: str
    url: str = ""
    audiences: list[str] = field(default_factory=list)


@contextmanager
def github_oidc(request_token: str, id_token: str) -> Iterator[GitHubOidc]:
    endpoint = GitHubOidc(request_token, id_token)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            audience = parse_qs(urlsplit(self.path).query).get("audience", [""])[0]
            endpoint.audiences.append(audience)
            scheme, _, token = self.headers.get("Authorization", "").partition(" ")
            authorized = scheme.lower() == "bearer" and token == endpoint.request_token
            status, body = (200, {"value": endpoint.id_token}) if authorized else (401, {})
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    # The real URL already carries a query (api-version); the audience is appended to it.
    endpoint.url = f"http://127.0.0.1:{server.server_address[1]}/token?api-version=2.0"
    try:
        yield endpoint
    finally:
        server.shutdown()
        server.server_close()
