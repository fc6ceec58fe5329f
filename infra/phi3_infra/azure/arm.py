"""A small Azure Resource Manager client on azure-core's pipeline.

One client for every ARM call the project makes outside Pulumi (preflight checks, job polling,
purges): bearer-token auth from any azure-identity credential, retries on 429/5xx that honour
Retry-After, a timeout on every call, `nextLink` paging, long-running operations followed to
their end within a bounded wait, and typed errors so callers can tell "not allowed" from "not
there" from "Azure is busy" from "the operation failed".

A token ARM refuses (401: `ExpiredAuthenticationToken` once it has expired, as ARM answers it in
Azure/azure-service-operator#2587) is dropped from the cache and the call is sent once more with
a fresh one, as Microsoft's own ARM client in Azure Pipelines does (microsoft/azure-pipelines-tasks
Tasks/Common/azure-arm-rest/AzureServiceClient.ts, `beginRequest`: a 401 ExpiredAuthenticationToken
is re-sent after `getToken(true)`). The cache refreshes a token before it expires, but a long wait
can still be refused one: a clock that lags Azure's (Azure/azure-sdk-for-java#33112), a revoked
token, a machine that slept. azure-core's bearer policy forgets its own copy on a 401 but would
take the same token back from this cache. A 403 is a missing role, which no new token cures.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from azure.core import PipelineClient
from azure.core.credentials import AccessToken, TokenCredential
from azure.core.exceptions import AzureError, ClientAuthenticationError
from azure.core.pipeline.policies import (
    BearerTokenCredentialPolicy,
    HttpLoggingPolicy,
    RequestIdPolicy,
    RetryPolicy,
    UserAgentPolicy,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.core.rest import HttpRequest, HttpResponse
from urllib3.util.retry import Retry

from phi3_infra.azure.credentials import (
    AZURE_PUBLIC,
    CredentialSettingsError,
    cloud_from_environment,
    credential_from_environment,
)

PUBLIC_CLOUD_ENDPOINT = AZURE_PUBLIC.resource_manager
ENDPOINT_ENV_VAR = "AZURE_RESOURCE_MANAGER_ENDPOINT"
# Refresh a shared token this long before it expires so no request carries a stale one.
_TOKEN_REFRESH_MARGIN_S = 300
# Fresh tokens one call may ask for after a 401: a second refusal is not an expired token.
_AUTH_RETRIES = 1


class ArmError(Exception):
    """An ARM call failed; `status` is the HTTP status (None when no response came back)."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class ArmAuthError(ArmError):
    """No token could be obtained, or ARM refused it (401) or the caller lacks a role (403)."""


class ArmNotFoundError(ArmError):
    """ARM answered 404: the resource, or the route in this cloud, does not exist."""


class ArmThrottledError(ArmError):
    """ARM still answered 429 after the retries."""


class ArmUnavailableError(ArmError):
    """ARM could not be reached, timed out, or still failed with 5xx after the retries."""


class OperationFailed(RuntimeError):
    """The operation ended without success; the message carries Azure's reason."""


class OperationTimedOut(TimeoutError):
    """The operation was still running when the wait ran out; it keeps running in Azure."""


@dataclass(frozen=True)
class Poll:
    """How to wait for an operation: at most `timeout_s`, asking every `interval_s` unless ARM
    says how long to wait (Retry-After)."""

    timeout_s: float
    interval_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


def timed_out(what: str, state: str, poll: Poll, advice: str) -> OperationTimedOut:
    """The error for a wait that ran out: `what` and its last state, then the caller's `advice`
    (only the caller knows which setting or command helps with its operation)."""
    message = f"{what} still {state} after {poll.timeout_s:.0f} s; it keeps running in Azure."
    return OperationTimedOut(f"{message} {advice}".rstrip())


class _SharedToken(TokenCredential):
    """Caches one token across threads, so concurrent calls start a single sign-in, not one each."""

    def __init__(self, credential: TokenCredential) -> None:
        self._credential = credential
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, ...], AccessToken] = {}

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        with self._lock:
            token = self._tokens.get(scopes)
            if token is None or token.expires_on - time.time() < _TOKEN_REFRESH_MARGIN_S:
                token = self._credential.get_token(*scopes, **kwargs)
                self._tokens[scopes] = token
            return token

    def discard(self, refused: str) -> None:
        """Forget `refused` (ARM answered 401 to it), so the next call signs in afresh; a token
        another thread already replaced stays."""
        with self._lock:
            for scopes, token in list(self._tokens.items()):
                if token.token == refused:
                    del self._tokens[scopes]


def _error_detail(response: HttpResponse) -> tuple[str, str]:
    """ARM's `{"error": {"code", "message"}}` body, or the raw text when it is not that shape."""
    try:
        error = response.json().get("error", {})
        return str(error.get("code", "")), str(error.get("message", ""))
    except (ValueError, AttributeError):
        return "", response.text()[:300]


class ArmClient:
    """Blocking ARM client; safe to share between threads.

    `endpoint` is the cloud's ARM base URL (sovereign clouds, or a local fake in tests); the token
    audience is `<endpoint>/.default` unless `audience` says otherwise. `timeout_s` bounds each
    attempt (connect and read); `deadline_s` bounds a call including its retries.
    """

    def __init__(
        self,
        credential: TokenCredential,
        *,
        endpoint: str = PUBLIC_CLOUD_ENDPOINT,
        audience: str | None = None,
        timeout_s: float = 30.0,
        deadline_s: float = 120.0,
        retry_total: int = 4,
        retry_backoff_s: float = 0.8,
        retry_backoff_max_s: float = 30.0,
        connection_verify: bool | str = True,
        max_connections: int = 32,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._credential = _SharedToken(credential)
        self._scope = audience or f"{self.endpoint}/.default"
        self._timeout_s = timeout_s
        session = requests.Session()
        # Enough pooled connections for the preflight's fan-out; retries belong to azure-core.
        # HTTPS only: the bearer-token policy refuses plain HTTP.
        adapter = requests.adapters.HTTPAdapter(
            pool_maxsize=max_connections,
            max_retries=Retry(total=False, redirect=False, raise_on_status=False),
        )
        session.mount("https://", adapter)
        self._client: PipelineClient[HttpRequest, HttpResponse] = PipelineClient(
            base_url=self.endpoint,
            transport=RequestsTransport(session=session, connection_verify=connection_verify),
            policies=[
                RequestIdPolicy(),
                UserAgentPolicy(sdk_moniker="phi3-infra-arm"),
                RetryPolicy(
                    retry_total=retry_total,
                    retry_backoff_factor=retry_backoff_s,
                    retry_backoff_max=retry_backoff_max_s,
                    timeout=deadline_s,
                ),
                BearerTokenCredentialPolicy(self._credential, self._scope),
                HttpLoggingPolicy(),
            ],
        )

    def __enter__(self) -> ArmClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def authenticate(self) -> None:
        """Obtain the token now, so a sign-in problem surfaces once, before any fan-out."""
        try:
            self._credential.get_token(self._scope)
        except ClientAuthenticationError as exc:
            raise ArmAuthError(f"could not get a token for {self._scope}: {exc.message}") from exc

    def get_json(
        self, path: str, api_version: str, params: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        response = self._send(
            "GET", self._url(path), {"api-version": api_version, **(params or {})}
        )
        body: dict[str, Any] = response.json()
        return body

    def list_json(
        self, path: str, api_version: str, params: Mapping[str, str] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every item of a list operation, following `nextLink` from page to page."""
        page = self.get_json(path, api_version, params)
        yield from page.get("value", [])
        while next_link := page.get("nextLink"):
            page = self._send("GET", self._same_origin(next_link), {}).json()
            yield from page.get("value", [])

    def post_json(
        self,
        path: str,
        api_version: str,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """POST an action (purge, scheduleRun, listKeys); an empty answer reads as {}."""
        response = self._send(
            "POST", self._url(path), {"api-version": api_version, **(params or {})}, body
        )
        return _json_or_empty(response)

    def put_json(self, path: str, api_version: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """PUT a whole resource (ARM answers 200/201, or 202 while it is still being applied)."""
        response = self._send("PUT", self._url(path), {"api-version": api_version}, body)
        return _json_or_empty(response)

    def delete(self, path: str, api_version: str, params: Mapping[str, str] | None = None) -> int:
        """Issue a DELETE; returns the status (200, 202 accepted, 204 already gone)."""
        response = self._send(
            "DELETE", self._url(path), {"api-version": api_version, **(params or {})}
        )
        return response.status_code

    def delete_and_wait(
        self,
        path: str,
        api_version: str,
        poll: Poll,
        what: str,
        params: Mapping[str, str] | None = None,
        advice: str = "",
    ) -> int:
        """DELETE and follow the operation to its end; returns the first answer's status: 200
        or 202 (deleted now) or 204 (nothing was there). 404 raises ArmNotFoundError."""
        response = self._send(
            "DELETE", self._url(path), {"api-version": api_version, **(params or {})}
        )
        self._follow(response, poll, what, advice)
        return response.status_code

    def post_and_wait(
        self,
        path: str,
        api_version: str,
        poll: Poll,
        what: str,
        body: Mapping[str, Any] | None = None,
        advice: str = "",
    ) -> dict[str, Any]:
        """POST an action that may run asynchronously (scheduleRun, cancel) and return its
        result once it has ended; an action without a result reads as {}."""
        response = self._send("POST", self._url(path), {"api-version": api_version}, body)
        return self._follow(response, poll, what, advice)

    def _follow(self, response: HttpResponse, poll: Poll, what: str, advice: str) -> dict[str, Any]:
        """The result of the operation `response` started, by ARM's asynchronous-operation
        contract (Azure/azure-resource-manager-rpc v1.0/async-api-reference.md; also
        MicrosoftDocs/azure-docs articles/azure-resource-manager/management/async-operations.md):
        a 201 or 202 names an Azure-AsyncOperation URL (an operation resource whose `status` ends
        Succeeded, Failed or Canceled) and/or a Location URL (202 while the operation runs, then
        what the request would have answered synchronously); Azure-AsyncOperation wins when both
        come. Before each look it waits Retry-After (whole seconds) when ARM sent one, else
        `poll.interval_s`; throttling and outages only delay the next look. A wait that runs out
        names `what` and ends with the caller's `advice`.

        Hand-written rather than azure-core's LROPoller/LROBasePolling (azure.core.polling
        .base_polling; ARMPolling lives in azure-mgmt-core, not a dependency): those poll on a
        background thread that outlives `result(timeout)`, sleep on the real clock, and report
        a failed operation without Azure's error code and message. Here the wait ends at the
        deadline, the clock is injectable for tests, and the errors are this module's."""
        status_url = response.headers.get("Azure-AsyncOperation")
        location = response.headers.get("Location")
        monitor = status_url or location
        if response.status_code not in (201, 202) or monitor is None:
            return _synchronous_result(response, what)
        method = response.request.method
        deadline = poll.clock() + poll.timeout_s
        state = "InProgress"
        answer: HttpResponse | None = response
        while True:
            _wait_before_looking(
                poll, _retry_after(answer, poll.interval_s), deadline, state, what, advice
            )
            try:
                answer = self._send("GET", self._same_origin(monitor, "operation URL"), {})
            except (ArmThrottledError, ArmUnavailableError):
                answer = None
                continue
            except ArmNotFoundError:
                # A delete's result may live under the deleted resource and go with it
                # (async-api-reference: "operationResults resource will not be accessible").
                if method == "DELETE" and status_url is None:
                    return {}
                raise
            if status_url is None:
                if answer.status_code != 202:
                    return _json_or_empty(answer)
                monitor = answer.headers.get("Location") or monitor
                continue
            state = str(_json_or_empty(answer).get("status") or state)
            if state in _OPERATION_ENDED_BADLY:
                code, message = _error_detail(answer)
                raise OperationFailed(f"{what} {state}: {code} {message}".rstrip())
            if state == "Succeeded":
                return self._operation_result(method, answer, location)

    def _operation_result(
        self, method: str, status: HttpResponse, location: str | None
    ) -> dict[str, Any]:
        """A succeeded operation's result. A POST's is at its Location, else at the status
        body's `resourceLocation`, else it is the status body (azure-core
        OperationResourcePolling.get_final_get_url); other methods' results are not needed
        here."""
        if method != "POST":
            return {}
        body = _json_or_empty(status)
        result_url = location or body.get("resourceLocation")
        if not result_url:
            return body
        final = self._send("GET", self._same_origin(result_url, "operation URL"), {})
        return _json_or_empty(final)

    def _url(self, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError(f"ARM path must start with '/': {path!r}")
        return self.endpoint + path

    def _same_origin(self, url: str, link: str = "nextLink") -> str:
        # The bearer token goes with every request: never follow a link to another host.
        if urlsplit(url)[:2] != urlsplit(self.endpoint)[:2]:
            raise ArmError(f"refusing {link} outside {self.endpoint}: {url}")
        return url

    def _send(
        self,
        method: str,
        url: str,
        params: Mapping[str, str],
        body: Mapping[str, Any] | None = None,
    ) -> HttpResponse:
        request = HttpRequest(
            method, url, params=dict(params), json=dict(body) if body is not None else None
        )
        where = f"{method} {urlsplit(url).path}"
        for attempt in range(_AUTH_RETRIES + 1):
            try:
                response = self._client.send_request(
                    request, connection_timeout=self._timeout_s, read_timeout=self._timeout_s
                )
            except ClientAuthenticationError as exc:
                raise ArmAuthError(f"{where}: could not get a token: {exc.message}") from exc
            except AzureError as exc:  # connection refused, TLS failure, timeouts
                raise ArmUnavailableError(f"{where}: {exc.message}") from exc
            if response.status_code != 401 or attempt == _AUTH_RETRIES:
                break
            # The bearer policy wrote the refused token into the request (module docstring).
            self._credential.discard(request.headers["Authorization"].removeprefix("Bearer "))
        status = response.status_code
        if status < 400:
            return response
        code, detail = _error_detail(response)
        message = f"{where} answered {status} {code}: {detail}".rstrip(": ")
        if status in (401, 403):
            raise ArmAuthError(message, status=status, code=code)
        if status == 404:
            raise ArmNotFoundError(message, status=status, code=code)
        if status == 429:
            raise ArmThrottledError(message, status=status, code=code)
        if status >= 500:
            raise ArmUnavailableError(message, status=status, code=code)
        raise ArmError(message, status=status, code=code)


def _synchronous_result(response: HttpResponse, what: str) -> dict[str, Any]:
    """The answer of a request that did not start an operation to follow; a 202 without a URL
    to follow it by is ARM breaking its own contract."""
    if response.status_code == 202:
        raise ArmError(
            f"{what}: ARM accepted the request (202) but named no Azure-AsyncOperation "
            "or Location header to follow it by",
            status=202,
        )
    return _json_or_empty(response)


def _wait_before_looking(
    poll: Poll, delay: float, deadline: float, state: str, what: str, advice: str
) -> None:
    """Sleep `delay` before the next look at an operation, unless that passes the deadline."""
    if poll.clock() + delay > deadline:
        raise timed_out(what, state, poll, advice)
    poll.sleep(delay)


def _json_or_empty(response: HttpResponse) -> dict[str, Any]:
    if not response.content:
        return {}
    body: dict[str, Any] = response.json()
    return body


# The terminal operation statuses besides Succeeded (async-api-reference, "Azure-AsyncOperation
# Resource format"): anything else means the operation is still running.
_OPERATION_ENDED_BADLY = frozenset({"Failed", "Canceled"})


def _retry_after(response: HttpResponse | None, default_s: float) -> float:
    """How long ARM asks to wait before the next look: Retry-After is whole seconds in ARM
    (async-api-reference: "will not support http-date"); without one, `default_s`."""
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        return max(0.0, float(value)) if value else default_s
    except ValueError:
        return default_s


def client_from_environment(endpoint: str | None = None, **options: Any) -> ArmClient:
    """The client `pulumi up` and the CLIs use, signed in as azure-native is (ARM_*, else
    azure-identity's chain: credentials.py) against `endpoint`, else
    $AZURE_RESOURCE_MANAGER_ENDPOINT, else the ARM of the ARM_ENVIRONMENT cloud (public Azure)."""
    try:
        credential = credential_from_environment()
    except CredentialSettingsError as exc:
        raise ArmAuthError(str(exc)) from None
    cloud = cloud_from_environment() or AZURE_PUBLIC
    base = endpoint or os.environ.get(ENDPOINT_ENV_VAR) or cloud.resource_manager
    return ArmClient(credential, endpoint=base, **options)


def add_arm_arguments(parser: argparse.ArgumentParser) -> None:
    """The `--subscription` and `--arm-endpoint` flags of every command-line tool that reads ARM."""
    parser.add_argument(
        "--subscription",
        default=os.environ.get("AZURE_SUBSCRIPTION_ID") or os.environ.get("ARM_SUBSCRIPTION_ID"),
        help="subscription id (default: $AZURE_SUBSCRIPTION_ID, else $ARM_SUBSCRIPTION_ID)",
    )
    parser.add_argument(
        "--arm-endpoint",
        default=os.environ.get(ENDPOINT_ENV_VAR),
        help=(
            f"ARM base URL (default: ${ENDPOINT_ENV_VAR}, else the ARM of the $ARM_ENVIRONMENT "
            "cloud, public Azure by default)"
        ),
    )
