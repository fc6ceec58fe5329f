"""Routes of the fake ARM server for what `pulumi up` and `pulumi destroy` do outside azure-native:
job status and cancellation, ACR build runs (with the build-source upload), online endpoint
traffic, permanent workspace deletes and vault purges (what the teardown audit reads is in
arm_teardown.py).

Shapes follow the ARM REST specs (jobs, registries/runs, onlineEndpoints, deletedVaults/purge).
Each test scripts the states a
resource goes through; the last one repeats. Asynchronous operations answer as ARM's contract
says (Azure/azure-resource-manager-rpc v1.0/async-api-reference.md): 202 with a Location that
answers 202 (with Retry-After) until the operation ends, then its result.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from tests.fakes.arm_server import Answer, FakeArm
from tests.fakes.examples import example_answer

_SUB = r"/subscriptions/(?P<sub>[^/]+)"
_GROUP = _SUB + r"/resourceGroups/(?P<rg>[^/]+)"
_WORKSPACE = _GROUP + r"/providers/Microsoft\.MachineLearningServices/workspaces/(?P<ws>[^/]+)"
_REGISTRY = _GROUP + r"/providers/Microsoft\.ContainerRegistry/registries/(?P<registry>[^/]+)"
_ML = "Microsoft.MachineLearningServices"
# Recorded examples (spec_examples/) the asynchronous answers start from.
WORKSPACE_DELETE = "machinelearningservices__2025-06-01__Workspace__delete"
JOB_CANCEL = "machinelearningservices__2025-06-01__Job__cancel"
SCHEDULE_RUN = "containerregistry__2019-06-01-preview__RegistriesScheduleRun"
# The least Retry-After the ML specs allow on a 202 (workspaceRP.json, mfe.json: minimum 10).
RETRY_AFTER_S = "10"


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
class Operation:
    """An operation behind a Location URL: it answers 202 `looks` more times, then `finish`
    applies the operation's effect and gives its result (None: the answer has no body)."""

    looks: int
    finish: Callable[[], Any]
    done: bool = False
    result: Any = None


@dataclass
class PipelineArm:
    """State behind the pipeline routes; `install` adds them to a FakeArm."""

    fake: FakeArm
    jobs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    registry_runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    uploads: dict[str, bytes] = field(default_factory=dict)
    scheduled: list[dict[str, Any]] = field(default_factory=list)
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Live workspaces: name -> (resource group, location).
    workspaces: dict[str, tuple[str, str]] = field(default_factory=dict)
    operations: dict[str, Operation] = field(default_factory=dict)
    operation_looks: int = 1  # how many times an operation's Location still answers 202
    schedule_run_status: str = "200"  # Registries_ScheduleRun answers 200 or 202

    def install(self) -> PipelineArm:
        fake = self.fake
        fake.route("GET", _WORKSPACE + r"/jobs/(?P<job>[^/]+)", self._get_job)
        fake.route("POST", _WORKSPACE + r"/jobs/(?P<job>[^/]+)/cancel", self._cancel_job)
        fake.route("DELETE", _WORKSPACE, self._delete_workspace)
        fake.route(
            "GET",
            _SUB + r"/providers/(?P<namespace>[^/]+)/operationResults/(?P<operation>[^/]+)",
            self._operation_result,
        )
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
        return self

    # -- jobs ---------------------------------------------------------------------------------
    def script_job(self, name: str, *states: dict[str, Any]) -> None:
        self.jobs[name] = list(states)

    def _get_job(self, fake: FakeArm, query: Any, m: re.Match[str]) -> tuple[int, Any]:
        states = self.jobs.get(m["job"])
        if not states:
            return _not_found(f"Job {m['job']}")
        return 200, states.pop(0) if len(states) > 1 else states[0]

    def _cancel_job(self, fake: FakeArm, query: Any, m: re.Match[str]) -> Answer:
        """Jobs_Cancel (mfe.json: long-running, final state via Location): 202 with the example's
        Location, the job's own URL (examples/Job/cancel.json); the job then reads
        CancelRequested once and Canceled from then on (JobStatus in mfe.json)."""
        states = self.jobs.get(m["job"])
        if not states:
            return _not_found(f"Job {m['job']}")
        self.jobs[m["job"]] = [
            _with_status(states[0], "CancelRequested"),
            _with_status(states[0], "Canceled"),
        ]
        status, body, headers = example_answer(JOB_CANCEL, "202")
        # The example's URL has placeholders and neither host nor api-version.
        job_url = (
            headers.pop("location")
            .removeprefix("http://")
            .format(subscriptionId=m["sub"], resourceGroupName=m["rg"], workspaceName=m["ws"])
        )
        job_url = job_url.replace("my-favorite-aml-job", m["job"])
        headers["Location"] = f"{fake.url}/{job_url}?api-version={query['api-version'][0]}"
        return status, body, headers

    # -- asynchronous operations --------------------------------------------------------------
    def start_operation(self, namespace: str, api_version: str, finish: Callable[[], Any]) -> str:
        """A new operation's Location, in the RPC's subscription-level operationResults form."""
        name = f"operation-{len(self.operations) + 1}"
        self.operations[name] = Operation(self.operation_looks, finish)
        path = f"/subscriptions/{self.fake.subscription_id}/providers/{namespace}"
        return f"{self.fake.url}{path}/operationResults/{name}?api-version={api_version}"

    def _operation_result(self, fake: FakeArm, query: Any, m: re.Match[str]) -> Answer:
        operation = self.operations.get(m["operation"])
        if operation is None:
            return _not_found(f"Operation {m['operation']}")
        if operation.looks > 0:
            operation.looks -= 1
            url = f"{fake.url}{m.group(0)}?api-version={query['api-version'][0]}"
            return 202, None, {"Location": url, "Retry-After": RETRY_AFTER_S}
        if not operation.done:
            operation.result, operation.done = operation.finish(), True
        # Done: what the request would have answered synchronously, 204 when that has no body.
        return (200, operation.result) if operation.result is not None else (204, None)

    # -- workspaces and purges ----------------------------------------------------------------
    def add_workspace(self, name: str, resource_group: str, location: str = "eastus2") -> None:
        self.workspaces[name] = (resource_group, location)

    def _delete_workspace(self, fake: FakeArm, query: Any, m: re.Match[str]) -> Answer:
        """Workspaces_Delete (workspaceRP.json: long-running, final state via Location; examples/
        Workspace/delete.json): 202 with a Location, after which the workspace is gone for good
        with forceToPurge=true, else soft-deleted (concept-soft-delete.md); 204 where there is
        no workspace. A soft-deleted one is not found, not purged: its name stays blocked
        (Azure/azure-cli#33756, "permanently-delete cannot find workspace")."""
        name = m["ws"]
        if name in self.workspaces:
            group, location = self.workspaces[name]
            permanently = query.get("forceToPurge") == ["true"]

            def finish() -> None:
                del self.workspaces[name]
                if not permanently:
                    fake.soft_delete_workspace(name, group, location)

            status, body, headers = example_answer(WORKSPACE_DELETE, "202")
            headers["Location"] = self.start_operation(_ML, query["api-version"][0], finish)
            return status, body, headers | {"Retry-After": RETRY_AFTER_S}
        if any(item["name"] == name for item in fake.deleted_workspaces or []):
            message = (
                f"The Resource '{_ML}/workspaces/{name}' under resource group '{m['rg']}' was "
                "not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
            )
            return 404, {"error": {"code": "ResourceNotFound", "message": message}}
        return example_answer(WORKSPACE_DELETE, "204")

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

    def _schedule_run(self, fake: FakeArm, query: Any, m: re.Match[str], body: bytes) -> Answer:
        request = json.loads(body)
        self.scheduled.append(request)
        if request.get("sourceLocation") not in self.uploads:
            message = f"source {request.get('sourceLocation')} was never uploaded"
            return 400, {"error": {"code": "InvalidSource", "message": message}}
        run_id = next(iter(self.registry_runs))
        # The example's run, as this registry's newly queued run.
        _, run, _ = example_answer(SCHEDULE_RUN, "200")
        registry = m.group(0).removesuffix("/scheduleRun")
        run |= {"id": f"{registry}/runs/{run_id}", "name": run_id}
        run["properties"] |= {"runId": run_id, "status": "Queued"}
        if self.schedule_run_status == "200":
            return 200, run
        # The example's 202 has no body and lists no headers; an asynchronous action names a
        # Location whose final answer is the action's result (async-api-reference, "Call Action
        # POST Asynchronously"), here the run.
        status, accepted, headers = example_answer(SCHEDULE_RUN, "202")
        headers["Location"] = self.start_operation(
            "Microsoft.ContainerRegistry", query["api-version"][0], lambda: run
        )
        return status, accepted, headers

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


def _with_status(job: dict[str, Any], status: str) -> dict[str, Any]:
    changed = copy.deepcopy(job)
    changed["properties"]["status"] = status
    return changed
