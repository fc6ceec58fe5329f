"""A local fake of the Azure Resource Manager routes the project calls, over real HTTPS.

Shapes follow the azure-rest-api-specs examples (ML `usages` and `vmSizes`, resource providers,
Key Vault `deletedVaults`, the three `checkNameAvailability` actions, GETs of a storage account,
registry, vault and online deployment, the listing of an endpoint's deployments); soft-deleted ML
workspaces follow the `deletedWorkspaces` listing the portal uses. Each test scripts its own
world: regions with sizes and quota, provider states, global names taken elsewhere or by the
stack's own resources, online deployments, soft-deleted names, faults (429/500/401 for N calls or
forever) and per-call latency. The server checks the bearer token (and the expiry of one with an
end), the subscription and the api-version like ARM does, and records every call. Later issues add
routes with `FakeArm.route`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from azure.core.credentials import AccessToken
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from phi3_infra.azure.arm import ArmClient
from phi3_infra.azure.preflight import REQUIRED_PROVIDERS
from tests.fakes.examples import example_response

SUBSCRIPTION_ID = "00000000-0000-0000-0000-000000000001"
TOKEN = "fake-arm-access-token"
ONLINE_DEPLOYMENT_GET = (
    "machinelearningservices__2024-10-01__OnlineDeployment__ManagedOnlineDeployment__get"
)

# api-versions this fake accepts, per provider: real ARM answers 400 to one it does not know.
API_VERSIONS = {
    "Microsoft.MachineLearningServices": {"2024-10-01", "2025-06-01"},
    "Microsoft.KeyVault": {"2023-07-01", "2024-11-01"},
    "Microsoft.Resources": {"2021-04-01", "2022-09-01"},
    "Microsoft.ContainerRegistry": {"2019-06-01-preview", "2023-07-01"},
    "Microsoft.Storage": {"2024-01-01"},
    # 2015-11-01-preview: the operation status URL of Workspaces_Delete's example (stable/
    # 2025-07-01 examples/WorkspacesDelete.json).
    "Microsoft.OperationalInsights": {"2025-07-01", "2015-11-01-preview"},
}


class FixedToken:
    """A TokenCredential handing out one token (the fake's by default); counts the sign-ins."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.requests = 0

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.requests += 1
        return AccessToken(self.token, int(time.time()) + 3600)


class ExpiringTokens(FixedToken):
    """A TokenCredential whose every sign-in hands out a new token that `fake` accepts for
    `lifetime_s` of its clock, as ARM accepts an Entra access token until its `exp`. The client
    is told an hour, as if its clock lagged Azure's: only ARM's refusal shows the expiry."""

    def __init__(self, fake: FakeArm, lifetime_s: float) -> None:
        super().__init__()
        self.fake, self.lifetime_s = fake, lifetime_s

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.requests += 1
        self.token = f"{TOKEN}-{self.requests}"
        self.fake.token_expiry[self.token] = self.fake.clock() + self.lifetime_s
        return AccessToken(self.token, int(time.time()) + 3600)


@dataclass
class OnlineDeployment:
    """An online deployment of the fake subscription; `states`: the provisioning states its GETs
    answer in turn, the last one repeating."""

    id: str
    instance_type: str
    instances: int
    states: list[str]
    model: str = ""  # the model version it serves (ARM id), where a test says

    def next_state(self) -> str:
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]

    def answer(self, state: str) -> dict[str, Any]:
        """machinelearningservices stable/2024-10-01 examples/OnlineDeployment/
        ManagedOnlineDeployment/get.json, as this deployment."""
        body = example_response(ONLINE_DEPLOYMENT_GET)
        body |= {
            "id": self.id,
            "name": self.id.rsplit("/", 1)[-1],
            "type": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments",
        }
        body["properties"] |= {"instanceType": self.instance_type, "provisioningState": state}
        if self.model:
            body["properties"]["model"] = self.model
        body["sku"] |= {"name": "Default", "capacity": self.instances}
        return body


@dataclass(frozen=True)
class VmSize:
    name: str
    family: str  # as the vmSizes API spells it, e.g. "standardNCADSA100v4Family"
    vcpus: int
    gpus: int
    low_priority_capable: bool = True
    compute_types: tuple[str, ...] = ("AmlCompute", "ComputeInstance")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "vCPUs": self.vcpus,
            "gpus": self.gpus,
            "osVhdSizeMB": 1047552,
            "maxResourceVolumeMB": 65536,
            "memoryGB": float(self.vcpus * 9),
            "lowPriorityCapable": self.low_priority_capable,
            "premiumIO": True,
            "supportedComputeTypes": list(self.compute_types),
        }


CATALOG = {
    size.name: size
    for size in (
        VmSize("Standard_NC24ads_A100_v4", "standardNCADSA100v4Family", 24, 1),
        VmSize("Standard_NC48ads_A100_v4", "standardNCADSA100v4Family", 48, 2),
        VmSize("Standard_NC96ads_A100_v4", "standardNCADSA100v4Family", 96, 4),
        VmSize("Standard_NC40ads_H100_v5", "standardNCadsH100v5Family", 40, 1),
        VmSize("Standard_NC6s_v3", "standardNCSv3Family", 6, 1),
        VmSize("Standard_E4s_v3", "standardESv3Family", 4, 0),
        VmSize("Standard_E16s_v3", "standardESv3Family", 16, 0),
        VmSize("Standard_DS3_v2", "standardDSv2Family", 4, 0),
    )
}


def usage_family_label(family: str) -> str:
    """The usages API's spelling of a family: standardNCSv3Family -> Standard NCSv3 Family."""
    core = re.sub(r"(?i)^standard|family$", "", family)
    return f"Standard {core} Family"


@dataclass
class Region:
    sizes: list[VmSize]
    family_dedicated: dict[str, tuple[int, int]]  # vmSizes family -> (used vCPUs, limit)
    dedicated_total: tuple[int, int]
    low_priority_total: tuple[int, int]

    def usages(self, subscription: str) -> list[dict[str, Any]]:
        sub = f"/subscriptions/{subscription}"
        ml = "Microsoft.MachineLearningServices"

        def row(kind: str, row_id: str, label: str, used: int, limit: int) -> dict[str, Any]:
            return {
                "id": row_id,
                "type": f"{ml}/{kind}/usages",
                "currentValue": used,
                "limit": limit,
                "name": {"value": label, "localizedValue": label},
                "unit": "Count",
            }

        rows = [
            row("totalCores", f"{sub}/usages", "Clusters", 3, 200),
            row("dedicatedCores", f"{sub}/usages", "Total Cluster Dedicated Regional vCPUs",
                *self.dedicated_total),
            row("lowPriorityCores", f"{sub}/usages", "Total Cluster LowPriority Regional vCPUs",
                *self.low_priority_total),
        ]  # fmt: skip
        for family, (used, limit) in self.family_dedicated.items():
            label = usage_family_label(family)
            # ARM mixes in workspace-level rows with the same name and other numbers (here listed
            # first): the preflight must read the subscription-level row.
            ws = f"{sub}/resourceGroups/other/providers/{ml}/workspaces/other-ws/usages/x"
            rows.append(row("workspaces", ws, f"{label} Cluster Dedicated vCPUs", 0, limit + 1000))
            for priority, values in (("Dedicated", (used, limit)), ("LowPriority", (0, -1))):
                full = f"{label} Cluster {priority} vCPUs"
                rows.append(
                    row("vmFamily", f"{sub}/usages/{full.replace(' ', '_')}", full, *values)
                )
        return rows


@dataclass
class Fault:
    status: int
    remaining: int | None  # None: forever
    retry_after: str | None
    path_contains: str


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    status: int
    started: float
    finished: float
    query: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""


# A handler answers (status, body) or, for asynchronous operations, (status, body, headers).
Answer = tuple[int, Any] | tuple[int, Any, dict[str, str]]
Handler = Callable[["FakeArm", dict[str, list[str]], re.Match[str]], Answer]
# A handler that also reads the request body (PUT and POST payloads, uploads).
BodyHandler = Callable[["FakeArm", dict[str, list[str]], re.Match[str], bytes], Answer]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler | BodyHandler
    with_body: bool = False
    # Shared-access-signature URLs (blob uploads) carry no bearer token.
    anonymous: bool = False


@dataclass
class FakeArm:
    subscription_id: str = SUBSCRIPTION_ID
    token: str = TOKEN
    latency_s: float = 0.0
    page_size: int = 100  # ARM lists all providers on one page; paging tests lower it
    regions: dict[str, Region] = field(default_factory=dict)
    providers: dict[str, str] = field(
        default_factory=lambda: dict.fromkeys(
            (*REQUIRED_PROVIDERS, "Microsoft.Compute"), "Registered"
        )
    )
    deleted_vaults: list[dict[str, Any]] = field(default_factory=list)
    # None: the subscription has no `deletedWorkspaces` type, ARM answers 404.
    deleted_workspaces: list[dict[str, Any]] | None = field(default_factory=list)
    # Global names held anywhere in Azure, by resource type (lowercase names): other
    # subscriptions' and this stack's own alike.
    taken_names: dict[str, set[str]] = field(default_factory=dict)
    # ARM ids (lowercase) of this subscription's storage accounts, registries and vaults.
    own_resources: set[str] = field(default_factory=set)
    # Online deployments by ARM id (lowercase).
    online_deployments: dict[str, OnlineDeployment] = field(default_factory=dict)
    # Tokens with an end (ExpiringTokens): token -> when it expires on `clock`; the fake's own
    # `token` never expires.
    token_expiry: dict[str, float] = field(default_factory=dict)
    clock: Callable[[], float] = time.time
    faults: list[Fault] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    url: str = ""
    ca_file: Path | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        sub = r"/subscriptions/(?P<sub>[^/]+)"
        ml = rf"{sub}/providers/Microsoft\.MachineLearningServices"
        self.route("GET", rf"{sub}/providers", _list_providers)
        self.route("GET", rf"{ml}/locations/(?P<loc>[^/]+)/vmSizes", _list_vm_sizes)
        self.route("GET", rf"{ml}/locations/(?P<loc>[^/]+)/usages", _list_usages)
        self.route("GET", rf"{ml}/deletedWorkspaces", _list_deleted_workspaces)
        self.route(
            "GET", rf"{sub}/providers/Microsoft\.KeyVault/deletedVaults", _list_deleted_vaults
        )
        namespaces = "|".join(re.escape(namespace) for namespace in GLOBAL_NAME_TYPES)
        self.route_with_body(
            "POST", rf"{sub}/providers/(?P<ns>{namespaces})/checkNameAvailability", _check_name
        )
        collections = "|".join(t.split("/")[1] for t in GLOBAL_NAME_TYPES.values())
        group = rf"{sub}/resourceGroups/(?P<rg>[^/]+)"
        self.route(
            "GET",
            rf"{group}/providers/(?P<ns>{namespaces})/(?P<kind>{collections})/(?P<name>[^/]+)",
            _get_own_resource,
        )
        endpoint = (
            rf"{group}/providers/Microsoft\.MachineLearningServices/workspaces/[^/]+"
            r"/onlineEndpoints/[^/]+"
        )
        self.route("GET", rf"{endpoint}/deployments/[^/]+", _get_online_deployment)
        self.route("GET", rf"{endpoint}/deployments", _list_online_deployments)

    # -- scripting -------------------------------------------------------------------------
    def route(self, method: str, path_regex: str, handler: Handler) -> None:
        self.routes.append(Route(method, re.compile(path_regex + "$", re.IGNORECASE), handler))

    def route_with_body(
        self, method: str, path_regex: str, handler: BodyHandler, *, anonymous: bool = False
    ) -> None:
        pattern = re.compile(path_regex + "$", re.IGNORECASE)
        self.routes.append(Route(method, pattern, handler, with_body=True, anonymous=anonymous))

    def add_region(
        self,
        location: str,
        sizes: tuple[str | VmSize, ...] = tuple(CATALOG),
        *,
        quota: dict[str, tuple[int, int]] | None = None,
        dedicated_total: tuple[int, int] = (0, 1000),
        low_priority_total: tuple[int, int] = (0, 1000),
    ) -> None:
        """A region offering `sizes` (catalog names or VmSize); `quota` maps a vmSizes family to
        (used, limit) vCPUs, 0 for families it does not name."""
        chosen = [CATALOG[size] if isinstance(size, str) else size for size in sizes]
        families = dict.fromkeys(size.family for size in CATALOG.values())
        family_quota = {family: (0, 0) for family in families} | (quota or {})
        self.regions[location] = Region(chosen, family_quota, dedicated_total, low_priority_total)

    def take_name(self, resource_type: str, name: str) -> None:
        """`name` of `resource_type` (e.g. Microsoft.Storage/storageAccounts) is held by a
        resource in another subscription."""
        self.taken_names.setdefault(resource_type.lower(), set()).add(name.lower())

    def create_resource(self, resource_group: str, resource_type: str, name: str) -> str:
        """A resource of this subscription in `resource_group` (an earlier run's); its id."""
        self.take_name(resource_type, name)
        arm_id = (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{resource_group}"
            f"/providers/{resource_type}/{name}"
        )
        self.own_resources.add(arm_id.lower())
        return arm_id

    def deploy_online(
        self,
        location: str,
        deployment_id: str,
        instance_type: str,
        instances: int,
        *,
        states: tuple[str, ...] = ("Succeeded",),
        model: str = "",
    ) -> None:
        """An online deployment running `instances` of `instance_type` (serving `model`, an ARM
        id, where given): its vCPUs count as used in the family and the regional dedicated total.
        Its GETs answer the provisioning `states` in turn, the last one from then on."""
        region, size = self.regions[location], CATALOG[instance_type]
        used, limit = region.family_dedicated[size.family]
        region.family_dedicated[size.family] = (used + instances * size.vcpus, limit)
        used, limit = region.dedicated_total
        region.dedicated_total = (used + instances * size.vcpus, limit)
        self.online_deployments[deployment_id.lower()] = OnlineDeployment(
            deployment_id, instance_type, instances, list(states), model
        )

    def soft_delete_vault(
        self,
        name: str,
        location: str,
        *,
        purge_protection: bool = False,
        resource_group: str = "old",
    ) -> None:
        sub = f"/subscriptions/{self.subscription_id}"
        group = f"{sub}/resourceGroups/{resource_group}"
        self.deleted_vaults.append({
            "id": f"{sub}/providers/Microsoft.KeyVault/locations/{location}/deletedVaults/{name}",
            "name": name,
            "type": "Microsoft.KeyVault/deletedVaults",
            "properties": {
                "vaultId": f"{group}/providers/Microsoft.KeyVault/vaults/{name}",
                "location": location,
                "deletionDate": "2026-11-18T10:00:00Z",
                "scheduledPurgeDate": "2027-02-16T10:00:00Z",
                "purgeProtectionEnabled": purge_protection,
                "tags": {},
            },
        })  # fmt: skip

    def soft_delete_workspace(self, name: str, resource_group: str, location: str) -> None:
        assert self.deleted_workspaces is not None
        ws_type = "Microsoft.MachineLearningServices/workspaces"
        self.deleted_workspaces.append({
            "id": f"/subscriptions/{self.subscription_id}/resourceGroups/{resource_group}"
                  f"/providers/{ws_type}/{name}",
            "name": name,
            "type": ws_type,
            "location": location,
            "properties": {"softDeleteRetentionInDays": 14},
        })  # fmt: skip

    def fail(
        self,
        status: int,
        *,
        times: int | None = None,
        retry_after: str | None = None,
        path_contains: str = "",
    ) -> None:
        """Answer `status` to the next `times` matching calls (None: every call from now on)."""
        self.faults.append(Fault(status, times, retry_after, path_contains))

    def calls_to(self, path_contains: str) -> list[Call]:
        return [call for call in self.calls if path_contains in call.path]

    def client(self, credential: FixedToken | None = None, **options: Any) -> ArmClient:
        """An ArmClient for this server, trusting its CA; `options` as ArmClient takes them."""
        return ArmClient(
            credential or FixedToken(),
            endpoint=self.url,
            connection_verify=str(self.ca_file),
            **options,
        )

    # -- serving ---------------------------------------------------------------------------
    def take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.path_contains in path and fault.remaining != 0:
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    return fault
        return None

    def dispatch(
        self, method: str, raw_path: str, headers: Any, body: bytes = b""
    ) -> tuple[int, Any, dict[str, str]]:
        url = urlsplit(raw_path)
        query = parse_qs(url.query)
        fault = self.take_fault(url.path)
        if fault is not None:
            extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            return fault.status, _error(f"Fault{fault.status}", "scripted fault"), extra
        for route in self.routes:
            match = route.pattern.match(url.path)
            if route.method != method or match is None:
                continue
            if route.anonymous:
                return (*route.handler(self, query, match, body), {})  # type: ignore[call-arg]
            if refusal := self._token_refusal(headers.get("Authorization")):
                return refusal
            if match.groupdict().get("sub", self.subscription_id) != self.subscription_id:
                return 404, _error("SubscriptionNotFound", "The subscription was not found."), {}
            provider = re.search(r"/providers/([^/]+)", url.path)
            namespace = provider.group(1) if provider else "Microsoft.Resources"
            accepted = API_VERSIONS.get(namespace, API_VERSIONS["Microsoft.Resources"])
            version = query.get("api-version", [""])[0]
            if version not in accepted:
                message = f"api-version '{version}' is not supported for {namespace}."
                return 400, _error("InvalidApiVersionParameter", message), {}
            if route.with_body:
                status, answer, *headers = route.handler(self, query, match, body)  # type: ignore[call-arg]
            else:
                status, answer, *headers = route.handler(self, query, match)  # type: ignore[call-arg]
            return status, answer, headers[0] if headers else {}
        if refusal := self._token_refusal(headers.get("Authorization")):
            return refusal
        return 404, _error("NotFound", f"No route for {method} {url.path}"), {}

    def _token_refusal(self, authorization: str | None) -> tuple[int, Any, dict[str, str]] | None:
        """ARM's 401 for a bearer token it does not accept; None for one it does. An expired
        one is refused as ARM answers it (Azure/azure-service-operator#2587: 401
        `ExpiredAuthenticationToken`, "The access token expiry UTC time '...' is earlier than
        current UTC time '...'.")."""
        token = (authorization or "").removeprefix("Bearer ")
        expires = self.token_expiry.get(token)
        if expires is not None and self.clock() >= expires:
            message = (
                f"The access token expiry UTC time '{_utc(expires)}' is earlier than current UTC "
                f"time '{_utc(self.clock())}'."
            )
            return 401, _error("ExpiredAuthenticationToken", message), {}
        if expires is None and token != self.token:
            return 401, _error("InvalidAuthenticationToken", "The access token is invalid."), {}
        return None

    @contextmanager
    def serving(self, workdir: Path) -> Iterator[FakeArm]:
        """Serve HTTPS on 127.0.0.1 with a throwaway CA written to `workdir/ca.pem`."""
        cert, key, self.ca_file = _make_tls_files(workdir)
        fake = self

        class RequestHandler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                started = time.perf_counter()
                time.sleep(fake.latency_s)
                length = int(self.headers.get("Content-Length") or 0)
                request_body = self.rfile.read(length) if length else b""
                status, body, headers = fake.dispatch(
                    self.command, self.path, self.headers, request_body
                )
                payload = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
                url = urlsplit(self.path)
                call = Call(
                    self.command,
                    url.path,
                    status,
                    started,
                    time.perf_counter(),
                    parse_qs(url.query),
                    request_body,
                )
                with fake._lock:
                    fake.calls.append(call)

            do_GET = do_DELETE = do_PUT = do_POST = do_PATCH = _handle

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

        server = _Server(("127.0.0.1", 0), RequestHandler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        self.url = f"https://127.0.0.1:{server.server_address[1]}"
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 drops concurrent connects, which then retry a second
    # later: the preflight opens one connection per call at once.
    request_queue_size = 128


def _utc(seconds: float) -> str:
    """A time as ARM's message prints it ('11/10/2022 9:09:43 PM')."""
    moment = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return f"{moment.month}/{moment.day}/{moment.year} {moment.strftime('%I:%M:%S %p').lstrip('0')}"


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _region(fake: FakeArm, location: str) -> Region | None:
    return fake.regions.get(location.lower())


def _no_region(location: str) -> tuple[int, Any]:
    message = f"The location '{location}' is not available for resource type 'locations/usages'."
    return 400, _error("LocationNotAvailableForResourceType", message)


def _list_vm_sizes(fake: FakeArm, query: dict[str, list[str]], m: re.Match[str]) -> tuple[int, Any]:
    region = _region(fake, m["loc"])
    if region is None:
        return _no_region(m["loc"])
    return 200, {"value": [size.to_json() for size in region.sizes]}


def _list_usages(fake: FakeArm, query: dict[str, list[str]], m: re.Match[str]) -> tuple[int, Any]:
    region = _region(fake, m["loc"])
    if region is None:
        return _no_region(m["loc"])
    return 200, {"value": region.usages(fake.subscription_id)}


def _list_providers(
    fake: FakeArm, query: dict[str, list[str]], m: re.Match[str]
) -> tuple[int, Any]:
    sub = f"/subscriptions/{fake.subscription_id}"
    items = [
        {
            "id": f"{sub}/providers/{namespace}",
            "namespace": namespace,
            "registrationState": state,
            "registrationPolicy": "RegistrationRequired",
            "resourceTypes": [],
        }
        for namespace, state in fake.providers.items()
    ]
    start = int(query.get("$skiptoken", ["0"])[0])
    body: dict[str, Any] = {"value": items[start : start + fake.page_size]}
    if start + fake.page_size < len(items):
        params = {"api-version": query["api-version"][0], "$skiptoken": start + fake.page_size}
        body["nextLink"] = f"{fake.url}{sub}/providers?{urlencode(params)}"
    return 200, body


def _list_deleted_vaults(
    fake: FakeArm, query: dict[str, list[str]], m: re.Match[str]
) -> tuple[int, Any]:
    return 200, {"value": fake.deleted_vaults}


def _list_deleted_workspaces(
    fake: FakeArm, query: dict[str, list[str]], m: re.Match[str]
) -> tuple[int, Any]:
    if fake.deleted_workspaces is None:
        message = "The resource type 'deletedWorkspaces' could not be found."
        return 404, _error("InvalidResourceType", message)
    return 200, {"value": fake.deleted_workspaces}


# Resource type of each namespace's globally unique names; the checkNameAvailability body's `type`
# must name it (the specs mark `name` and `type` required: storage stable/2024-01-01
# StorageAccountCheckNameAvailabilityParameters, containerregistry stable/2023-07-01
# RegistryNameCheckRequest, keyvault stable/2023-07-01 VaultCheckNameAvailabilityParameters).
GLOBAL_NAME_TYPES = {
    "Microsoft.Storage": "Microsoft.Storage/storageAccounts",
    "Microsoft.ContainerRegistry": "Microsoft.ContainerRegistry/registries",
    "Microsoft.KeyVault": "Microsoft.KeyVault/vaults",
}


def _taken_answer(resource_type: str, name: str) -> dict[str, Any]:
    """checkNameAvailability for a name in use, per provider. Registry: the answer of
    containerregistry stable/2023-07-01 examples/RegistryCheckNameNotAvailable.json. Key Vault:
    the message Az.KeyVault documents for a used name (Azure/azure-powershell, src/KeyVault/
    KeyVault/help/Test-AzKeyVaultNameAvailability.md, example 2). Storage: the specs have no
    example of a taken name; the fields are storage.json's CheckNameAvailabilityResult, the
    wording follows the registry example."""
    messages = {
        "Microsoft.ContainerRegistry/registries": f"The registry {name} is already in use.",
        "Microsoft.KeyVault/vaults": (
            f"The vault name '{name}' is already in use. Vault names are globally unique so it "
            "is possible that the name is already taken."
        ),
        "Microsoft.Storage/storageAccounts": f"The storage account named {name} is already taken.",
    }
    return {"nameAvailable": False, "reason": "AlreadyExists", "message": messages[resource_type]}


def _check_name(
    fake: FakeArm, query: dict[str, list[str]], m: re.Match[str], body: bytes
) -> tuple[int, Any]:
    request = json.loads(body or b"{}")
    expected = GLOBAL_NAME_TYPES[m["ns"]]
    name, given_type = request.get("name"), request.get("type")
    if not name or str(given_type).lower() != expected.lower():
        message = f"The request must name 'name' and 'type' {expected!r}; got {request}."
        return 400, _error("InvalidRequestContent", message)
    taken = fake.taken_names.get(expected.lower(), set())
    if expected == "Microsoft.KeyVault/vaults":
        # A soft-deleted vault keeps its name until purged (what the message above warns of).
        taken = taken | {str(vault["name"]).lower() for vault in fake.deleted_vaults}
    if str(name).lower() in taken:
        return 200, _taken_answer(expected, str(name))
    # A free name: the answer of storage stable/2024-01-01 examples/
    # StorageAccountCheckNameAvailability.json, containerregistry stable/2023-07-01
    # examples/RegistryCheckNameAvailable.json and keyvault stable/2024-11-01
    # examples/checkVaultNameAvailability.json alike.
    return 200, {"nameAvailable": True}


def _get_own_resource(
    fake: FakeArm, query: dict[str, list[str]], m: re.Match[str]
) -> tuple[int, Any]:
    path = m.string  # routes match the request's path
    if path.lower() not in fake.own_resources:
        message = f"The Resource '{m['ns']}/{m['kind']}/{m['name']}' under resource group "
        message += f"'{m['rg']}' was not found."
        return 404, _error("ResourceNotFound", message)
    # The identifying fields of storage stable/2024-01-01 examples/StorageAccountGetProperties
    # .json, keyvault stable/2024-11-01 examples/getVault.json and containerregistry
    # stable/2023-07-01 examples/RegistryGet.json; the program reads no more than the 200.
    return 200, {"id": path, "name": m["name"], "type": f"{m['ns']}/{m['kind']}"}


def _get_online_deployment(
    fake: FakeArm, query: dict[str, list[str]], m: re.Match[str]
) -> tuple[int, Any]:
    path = m.string
    deployment = fake.online_deployments.get(path.lower())
    if deployment is None:
        return 404, _error("ResourceNotFound", f"Online deployment {path} was not found.")
    return 200, deployment.answer(deployment.next_state())


def _list_online_deployments(
    fake: FakeArm, query: dict[str, list[str]], m: re.Match[str]
) -> tuple[int, Any]:
    """OnlineDeployments_List (examples/OnlineDeployment/list.json: `value`, and no `nextLink`
    on the last page); 404 for an endpoint the fake has no deployment under, as ARM answers for a
    parent that does not exist."""
    prefix = m.string.lower() + "/"
    found = [d for key, d in fake.online_deployments.items() if key.startswith(prefix)]
    if not found:
        return 404, _error("ResourceNotFound", f"Online endpoint {m.string} was not found.")
    return 200, {"value": [d.answer(d.states[0]) for d in found]}


def _make_tls_files(workdir: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-arm test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    workdir.mkdir(parents=True, exist_ok=True)
    ca_file, cert_file, key_file = workdir / "ca.pem", workdir / "cert.pem", workdir / "key.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file, ca_file
