"""Routes of the fake ARM server for what `pulumi up` and `pulumi destroy` do outside azure-native:
job status, ACR build runs (with the build-source upload), online endpoint traffic, soft-delete
purges, and the tagged-resource listing the teardown audit reads.

Shapes follow the ARM REST specs (jobs, registries/runs, onlineEndpoints, deletedVaults/purge,
resources list with `$filter=tagName eq ... and tagValue eq ...`). Each test scripts the states a
resource goes through; the last one repeats.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from tests.fakes.arm_server import FakeArm

_SUB = r"/subscriptions/(?P<sub>[^/]+)"
_GROUP = _SUB + r"/resourceGroups/(?P<rg>[^/]+)"
_WORKSPACE = _GROUP + r"/providers/Microsoft\.MachineLearningServices/workspaces/(?P<ws>[^/]+)"
_REGISTRY = _GROUP + r"/providers/Microsoft\.ContainerRegistry/registries/(?P<registry>[^/]+)"
_TAG_FILTER = re.compile(r"tagName eq '(?P<name>[^']+)' and tagValue eq '(?P<value>[^']+)'")


def _not_found(what: str) -> tuple[int, Any]:
    return 404, {"error": {"code": "ResourceNotFound", "message": f"{what} was not found."}}


def job_state(name: str, status: str, **extra: Any) -> dict[str, Any]:
    """A command job as ARM returns it, in `status`."""
    properties: dict[str, Any] = {
        "jobType": "Command",
        "status": status,
        "services": {
            "Studio": {
                "jobServiceType": "Studio",
                "endpoint": f"https://ml.azure.com/runs/{name}?wsid=/subscriptions/x/workspaces/w",
            }
        },
    }
    return {"id": name, "name": name, "properties": properties | extra}


@dataclass
class PipelineArm:
    """State behind the pipeline routes; `install` adds them to a FakeArm."""

    fake: FakeArm
    jobs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    registry_runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    uploads: dict[str, bytes] = field(default_factory=dict)
    scheduled: list[dict[str, Any]] = field(default_factory=list)
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    # ARM resources and groups, each {"id", "name", "type", "tags"}: what the audit lists.
    resources: list[dict[str, Any]] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)

    def install(self) -> PipelineArm:
        fake = self.fake
        fake.route("GET", _WORKSPACE + r"/jobs/(?P<job>[^/]+)", self._get_job)
        fake.route("DELETE", _WORKSPACE, self._delete_workspace)
        fake.route(
            "POST",
            _SUB + r"/providers/Microsoft\.KeyVault/locations/(?P<loc>[^/]+)"
            r"/deletedVaults/(?P<vault>[^/]+)/purge",
            self._purge_vault,
        )
        fake.route("POST", _REGISTRY + r"/listBuildSourceUploadUrl", self._upload_url)
        # Blob data plane (SAS uploads of build contexts, bearer-token uploads of data): the
        # storage service, not ARM, checks those credentials.
        fake.route_with_body("PUT", r"/upload/(?P<blob>[^/]+)", self._upload, anonymous=True)
        fake.route_with_body("PUT", r"/blob/(?P<blob>.+)", self._put_blob, anonymous=True)
        fake.route_with_body("POST", _REGISTRY + r"/scheduleRun", self._schedule_run)
        fake.route("GET", _REGISTRY + r"/runs/(?P<run>[^/]+)", self._get_run)
        endpoint = _WORKSPACE + r"/onlineEndpoints/(?P<endpoint>[^/]+)"
        fake.route("GET", endpoint, self._get_endpoint)
        fake.route_with_body("PUT", endpoint, self._put_endpoint)
        fake.route_with_body("POST", r"/oauth2/exchange", self._exchange, anonymous=True)
        fake.route("GET", _SUB + r"/resources", self._list_resources)
        fake.route("GET", _SUB + r"/resourcegroups", self._list_groups)
        return self

    # -- jobs ---------------------------------------------------------------------------------
    def script_job(self, name: str, *states: dict[str, Any]) -> None:
        self.jobs[name] = list(states)

    def _get_job(self, fake: FakeArm, query: Any, m: re.Match[str]) -> tuple[int, Any]:
        states = self.jobs.get(m["job"])
        if not states:
            return _not_found(f"Job {m['job']}")
        return 200, states.pop(0) if len(states) > 1 else states[0]

    # -- purge --------------------------------------------------------------------------------
    def _delete_workspace(self, fake: FakeArm, query: Any, m: re.Match[str]) -> tuple[int, Any]:
        assert query.get("forceToPurge") == ["true"], "a workspace is only ever purged here"
        deleted = fake.deleted_workspaces or []
        for item in deleted:
            if item["name"] == m["ws"]:
                deleted.remove(item)
                return 202, None
        return _not_found(f"Workspace {m['ws']}")

    def _purge_vault(self, fake: FakeArm, query: Any, m: re.Match[str]) -> tuple[int, Any]:
        for item in fake.deleted_vaults:
            if item["name"] == m["vault"]:
                if item["properties"]["purgeProtectionEnabled"]:
                    message = f"Vault {m['vault']} has purge protection enabled."
                    return 409, {"error": {"code": "Conflict", "message": message}}
                fake.deleted_vaults.remove(item)
                return 202, None
        return _not_found(f"Deleted vault {m['vault']}")

    # -- registry builds ----------------------------------------------------------------------
    def script_run(self, run_id: str, *statuses: str, error: str = "") -> None:
        self.registry_runs[run_id] = [
            {"properties": {"runId": run_id, "status": status, "runErrorMessage": error}}
            for status in statuses
        ]

    def _upload_url(self, fake: FakeArm, query: Any, m: re.Match[str]) -> tuple[int, Any]:
        blob = f"source-{len(self.uploads) + 1}.tar.gz"
        return 200, {"uploadUrl": f"{fake.url}/upload/{blob}?sig=sas", "relativePath": blob}

    def _upload(self, fake: FakeArm, query: Any, m: re.Match[str], body: bytes) -> tuple[int, Any]:
        if "sig" not in query:
            return 403, {"error": {"code": "AuthenticationFailed", "message": "no SAS"}}
        self.uploads[m["blob"]] = body
        return 201, None

    def _put_blob(
        self, fake: FakeArm, query: Any, m: re.Match[str], body: bytes
    ) -> tuple[int, Any]:
        self.uploads[m["blob"]] = body
        return 201, None

    def _schedule_run(
        self, fake: FakeArm, query: Any, m: re.Match[str], body: bytes
    ) -> tuple[int, Any]:
        request = json.loads(body)
        self.scheduled.append(request)
        if request.get("sourceLocation") not in self.uploads:
            message = f"source {request.get('sourceLocation')} was never uploaded"
            return 400, {"error": {"code": "InvalidSource", "message": message}}
        run_id = next(iter(self.registry_runs))
        return 200, {"properties": {"runId": run_id, "status": "Queued"}}

    def _get_run(self, fake: FakeArm, query: Any, m: re.Match[str]) -> tuple[int, Any]:
        states = self.registry_runs.get(m["run"])
        if not states:
            return _not_found(f"Run {m['run']}")
        return 200, states.pop(0) if len(states) > 1 else states[0]

    def _exchange(
        self, fake: FakeArm, query: Any, m: re.Match[str], body: bytes
    ) -> tuple[int, Any]:
        """ACR's token exchange: an Entra access token in, a registry refresh token out."""
        form = {key: values[0] for key, values in parse_qs(body.decode()).items()}
        if form.get("grant_type") != "access_token" or form.get("access_token") != fake.token:
            return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "invalid token"}]}
        return 200, {"refresh_token": f"acr-refresh-token-for-{form['service']}"}

    # -- endpoints ----------------------------------------------------------------------------
    def _get_endpoint(self, fake: FakeArm, query: Any, m: re.Match[str]) -> tuple[int, Any]:
        endpoint = self.endpoints.get(m["endpoint"])
        if endpoint is None:
            return _not_found(f"Online endpoint {m['endpoint']}")
        answer = json.loads(json.dumps(endpoint))
        # A PUT is applied in the background: the first read after it still says Updating.
        endpoint["properties"]["provisioningState"] = "Succeeded"
        return 200, answer

    def _put_endpoint(
        self, fake: FakeArm, query: Any, m: re.Match[str], body: bytes
    ) -> tuple[int, Any]:
        if m["endpoint"] not in self.endpoints:
            return _not_found(f"Online endpoint {m['endpoint']}")
        endpoint = json.loads(body)
        endpoint["properties"]["provisioningState"] = "Updating"
        self.endpoints[m["endpoint"]] = endpoint | {"name": m["endpoint"]}
        return 202, None

    # -- listings -----------------------------------------------------------------------------
    def _tagged(self, items: list[dict[str, Any]], query: Any) -> tuple[int, Any]:
        wanted = _TAG_FILTER.fullmatch(query.get("$filter", [""])[0])
        if wanted is None:
            return 400, {"error": {"code": "InvalidFilter", "message": "unsupported $filter"}}
        return 200, {
            "value": [
                item
                for item in items
                if (item.get("tags") or {}).get(wanted["name"]) == wanted["value"]
            ]
        }

    def _list_resources(self, fake: FakeArm, query: Any, m: re.Match[str]) -> tuple[int, Any]:
        return self._tagged(self.resources, query)

    def _list_groups(self, fake: FakeArm, query: Any, m: re.Match[str]) -> tuple[int, Any]:
        return self._tagged(self.groups, query)
