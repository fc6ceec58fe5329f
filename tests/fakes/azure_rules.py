"""A stateful fake of Azure for the azure-native requests an offline plan stands for.

The mocks (phi3_infra/tooling/offline.py) answer every registration; they cannot say no.
`FakeAzure.apply` replays a planned run the way the Pulumi engine would send it to Azure, against
what earlier runs left there: a resource new to the state (or with a new ARM id) is a PUT that
creates, one whose inputs changed outside its `ignore_changes` paths is a PUT that updates, an
unchanged one sends nothing, and one the run no longer has is a DELETE unless `retain_on_delete`.
Each request then meets the Azure rules below, each with its source; the first one refused raises
`AzureRefusal`. `requests` records what was sent, for the tests to read.

Answers that Azure documents with an example are built from that example (spec_examples/).
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from phi3_infra.tooling.offline import LifecycleOptions, OfflineRun, PlannedResource
from tests.fakes.examples import example_response

WORKSPACE = "azure-native:machinelearningservices:Workspace"
COMPUTE = "azure-native:machinelearningservices:Compute"
JOB = "azure-native:machinelearningservices:Job"
ROLE_ASSIGNMENT = "azure-native:authorization:RoleAssignment"
DATA_VERSION = "azure-native:machinelearningservices:DataVersion"
ENVIRONMENT_VERSION = "azure-native:machinelearningservices:EnvironmentVersion"
MODEL_VERSION = "azure-native:machinelearningservices:ModelVersion"
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"

# What a PUT may change on an existing asset version; everything else is immutable.
# Environments and models: "only `description` and `tags` can be updated. All other properties
# are immutable" (MicrosoftDocs/azure-ai-docs articles/machine-learning/
# how-to-manage-environments-v2.md and how-to-manage-models.md, "Update"). Data: tags are added
# to an existing version by `create_or_update` (how-to-create-data-assets.md, "Add tags to an
# existing data asset"); the service's refusal otherwise, as users capture it from `az ml data
# create` (not in the docs), reads "the existing asset's data uri cannot be changed. Only tags,
# description, and isArchived can be updated".
MUTABLE_VERSION_PATHS: Mapping[str, frozenset[str]] = {
    DATA_VERSION: frozenset({"properties.tags", "properties.description", "properties.isArchived"}),
    ENVIRONMENT_VERSION: frozenset({"properties.tags", "properties.description"}),
    MODEL_VERSION: frozenset({"properties.tags", "properties.description"}),
}
# Jobs_CreateOrUpdate: "Creates and executes a Job. For update case, the Tags in the definition
# passed in will replace Tags in the existing job" (Azure/azure-rest-api-specs
# machinelearningservices stable/2025-12-01): nothing else of a submitted job changes.
MUTABLE_JOB_PATHS = frozenset({"properties.tags"})
# `azureml:<name>:<version>` or `azureml:<name>@<label>`, not an `azureml://` URI nor an ARM id.
_SHORT_FORM = re.compile(r"^azureml:(?!/)[^:@/]+[:@][^/]+$")


class AzureRefusal(Exception):
    """Azure answered a request with an error. `status` and `code` are None where Azure's
    documentation states the rule but not the wire answer."""

    def __init__(
        self, resource: str, message: str, status: int | None = None, code: str | None = None
    ) -> None:
        self.resource, self.status, self.code = resource, status, code
        answer = f"{status} {code}: " if status else ""
        super().__init__(f"Azure refuses {resource}: {answer}{message}")


@dataclass(frozen=True)
class ArmRequest:
    method: str  # PUT or DELETE
    type: str  # the azure-native token
    id: str
    update: bool = False  # a PUT on an object that already exists


@dataclass(frozen=True)
class _Stored:
    """What the engine keeps in its state for one resource."""

    type: str
    id: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    options: LifecycleOptions


@dataclass
class FakeAzure:
    """One subscription's Azure, kept across `apply` calls like a stack's state and its cloud."""

    requests: list[ArmRequest] = field(default_factory=list, init=False)
    _state: dict[str, _Stored] = field(default_factory=dict, init=False)  # by URN
    _workspaces: dict[str, _Stored] = field(default_factory=dict, init=False)  # by ARM id
    # Role assignments Azure holds, by assignment name.
    _assignments: dict[str, dict[str, Any]] = field(default_factory=dict, init=False)

    def apply(self, run: OfflineRun) -> OfflineRun:
        """Send what `pulumi up` would send for `run`; return `run` if Azure accepts all of it."""
        planned = [r for r in run.resources if r.custom and r.type.startswith("azure-native:")]
        for resource in planned:
            self._register(resource)
        for urn in set(self._state) - {r.urn for r in planned}:
            self._delete(self._state.pop(urn))
        return run

    def sent(self, urn: str) -> dict[str, Any]:
        """The inputs Azure holds for `urn`: what the engine sent, ignore_changes applied."""
        return self._state[urn].inputs

    def updates(self, *types: str) -> list[ArmRequest]:
        return [r for r in self.requests if r.update and r.type in types]

    def deletes(self, *types: str) -> list[ArmRequest]:
        return [r for r in self.requests if r.method == "DELETE" and r.type in types]

    def role_assignments(self) -> list[dict[str, Any]]:
        """Every role assignment Azure holds: the resource providers' and the program's."""
        return list(self._assignments.values())

    def _register(self, resource: PlannedResource) -> None:
        old = self._state.get(resource.urn)
        inputs = _with_ignored_changes(resource, old)
        stored = _Stored(
            resource.type, str(resource.id), inputs, resource.outputs, resource.options
        )
        if old is not None and old.id == stored.id:
            changed = set(_changed_paths(old.inputs, inputs))
            if changed:
                self._put(stored, changed)
        else:
            self._put(stored, None)
            if old is not None:
                self._delete(old)  # a replacement: the new object first, then the old one goes
        self._state[resource.urn] = stored

    def _put(self, resource: _Stored, changed: set[str] | None) -> None:
        """`changed`: the input paths an update changes; None for a create."""
        self.requests.append(ArmRequest("PUT", resource.type, resource.id, changed is not None))
        if resource.type == WORKSPACE:
            self._workspace_put(resource, created=changed is None)
        elif resource.type == COMPUTE:
            self._compute_put(resource)
        elif resource.type == ROLE_ASSIGNMENT and changed is None:
            self._assignment_create(resource)
        elif resource.type == JOB:
            self._job_put(resource, changed)
        elif resource.type in MUTABLE_VERSION_PATHS and changed is not None:
            _refuse_immutable(resource, changed, MUTABLE_VERSION_PATHS[resource.type])

    def _delete(self, resource: _Stored) -> None:
        if resource.options.retain_on_delete:
            return
        self.requests.append(ArmRequest("DELETE", resource.type, resource.id))
        if resource.type == ROLE_ASSIGNMENT:
            self._assignments.pop(resource.inputs["roleAssignmentName"], None)

    def _workspace_put(self, workspace: _Stored, *, created: bool) -> None:
        self._workspaces[workspace.id] = workspace
        if created:
            for assignment in self._provider_assignments(workspace):
                self._assignments[assignment["name"]] = assignment

    def _provider_assignments(self, workspace: _Stored) -> Iterator[dict[str, Any]]:
        """The role assignments the resource provider creates itself for a hub's or a project's
        system-assigned identity ("Managed by Microsoft": articles/machine-learning/
        how-to-identity-based-service-authentication.md, "Workspace identity types")."""
        principal = (workspace.outputs.get("identity") or {}).get("principalId")
        kind = workspace.inputs.get("kind")
        if principal is None:
            return
        if kind == "Hub":
            # "Storage Blob Data Contributor ... The hub's managed identity. Automatically
            # assigned the role when you provision the hub. Don't manually change this role
            # assignment" (articles/ai-foundry/how-to/disable-local-auth.md, "Scenarios for hub
            # storage account role assignments").
            yield _assignment(
                _provider_assignment_name(workspace),
                STORAGE_BLOB_DATA_CONTRIBUTOR,
                principal,
                workspace.inputs["storageAccount"],
            )
        elif kind == "Project":
            # "Project workspaces use designated containers ... and have a conditional Azure
            # Attribute Based Access role assignment for the workspace identity for accessing
            # these containers only" (articles/machine-learning/concept-hub-workspace.md,
            # "Storage"): a data-plane role on the hub's account, limited by its condition. The
            # doc does not name the role; blob data roles are the ones such conditions apply to.
            hub = self._workspaces[workspace.inputs["hubResourceId"]]
            assignment = _assignment(
                _provider_assignment_name(workspace),
                STORAGE_BLOB_DATA_CONTRIBUTOR,
                principal,
                hub.inputs["storageAccount"],
            )
            assignment["properties"]["condition"] = "containers of this project only"
            yield assignment

    def _compute_put(self, compute: _Stored) -> None:
        workspace = self._workspaces.get(compute.id.rsplit("/computes/", 1)[0])
        kind = workspace.inputs.get("kind") if workspace else None
        compute_type = (compute.inputs.get("properties") or {}).get("computeType")
        if compute_type == "AmlCompute" and kind in ("Hub", "Project"):
            # "Compute clusters: Default workspace X, Hub workspace -, Project workspace -. Use
            # alternative serverless compute" (articles/machine-learning/concept-hub-workspace.md,
            # "Supported capabilities by workspace kind").
            raise AzureRefusal(
                compute.id,
                f"compute clusters (AmlCompute) are not supported in a {kind} workspace; use "
                "serverless compute (concept-hub-workspace.md)",
            )

    def _assignment_create(self, resource: _Stored) -> None:
        inputs = resource.inputs
        new = _assignment(
            inputs["roleAssignmentName"],
            inputs["roleDefinitionId"].rsplit("/", 1)[-1],
            inputs["principalId"],
            inputs["scope"],
        )
        for existing in self._assignments.values():
            if _same_grant(existing, new):
                # Role, principal and scope identify an assignment, the name does not: a second
                # one is "Status=409 Code=RoleAssignmentExists Message=The role assignment already
                # exists." (hashicorp/terraform-provider-azurerm#17421, #28694: "API responds a
                # 409 conflict error when create a new role assignment with the same trio but
                # different name"; Azure/azure-cli#8599: 409 even for an identical request).
                raise AzureRefusal(
                    f"{resource.id} (the same grant as {existing['id']})",
                    "The role assignment already exists.",
                    status=409,
                    code="RoleAssignmentExists",
                )
        self._assignments[new["name"]] = new

    def _job_put(self, job: _Stored, changed: set[str] | None) -> None:
        properties = job.inputs.get("properties") or {}
        identity = properties.get("identity") or {}
        workspace = self._workspaces.get(job.id.rsplit("/jobs/", 1)[0])
        held = ((workspace.inputs if workspace else {}).get("identity") or {}).get(
            "userAssignedIdentities"
        ) or []
        serverless_managed = "computeId" not in properties and identity.get("identityType") == (
            "Managed"
        )
        if serverless_managed and identity.get("resourceId") not in held:
            # Serverless compute "doesn't support system-assigned identity"; a job can use a
            # user-assigned identity "when you have a workspace configured with" it
            # (articles/machine-learning/how-to-use-serverless-compute.md, "Identity support and
            # credential passthrough"); without one, a managed-identity job is refused
            # (Azure/azure-sdk-for-python#32921).
            raise AzureRefusal(
                job.id,
                f"the serverless job runs as {identity.get('resourceId')}, which its workspace "
                "does not hold as a user-assigned identity",
            )
        for role, job_input in (properties.get("inputs") or {}).items():
            uri = str(job_input.get("uri", ""))
            if _SHORT_FORM.match(uri):
                # The SDK never sends the short form: `_resolve_job_input` hands any input path
                # with ':' or '@' to `get_asset_arm_id`, which returns the version's ARM id
                # (Azure/azure-sdk-for-python sdk/ml/azure-ai-ml/azure/ai/ml/operations/
                # _job_operations.py, _operation_orchestrator.py VERSIONED_RESOURCE_ID_FORMAT).
                raise AzureRefusal(
                    job.id,
                    f"input {role!r} is {uri!r}: a job input names a data version by its ARM id "
                    "(/subscriptions/.../workspaces/<ws>/data/<name>/versions/<version>)",
                )
        if changed is not None:
            _refuse_immutable(job, changed, MUTABLE_JOB_PATHS)


def _provider_assignment_name(workspace: _Stored) -> str:
    """Assignment names are GUIDs; the provider's own are unknown to the program."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"resource-provider|{workspace.id}"))


def _assignment(name: str, role_guid: str, principal_id: str, scope: str) -> dict[str, Any]:
    """A role assignment as Azure returns it (2022-04-01 RoleAssignments_CreateForResource.json):
    its role definition is the tenant-wide `/providers/.../roleDefinitions/<guid>`."""
    body = example_response("authorization__2022-04-01__RoleAssignments_CreateForResource", "201")
    definition = body["properties"]["roleDefinitionId"].rsplit("/", 1)[0]
    body["properties"] |= {
        "roleDefinitionId": f"{definition}/{role_guid}",
        "principalId": principal_id,
        "principalType": "ServicePrincipal",
        "scope": scope,
    }
    body |= {"name": name, "id": f"{scope}/providers/{body['type']}/{name}"}
    return body


def _same_grant(first: Mapping[str, Any], second: Mapping[str, Any]) -> bool:
    a, b = first["properties"], second["properties"]
    return bool(
        a["roleDefinitionId"].rsplit("/", 1)[-1].lower()
        == b["roleDefinitionId"].rsplit("/", 1)[-1].lower()
        and a["principalId"] == b["principalId"]
        and a["scope"].rstrip("/").lower() == b["scope"].rstrip("/").lower()
    )


def _refuse_immutable(resource: _Stored, changed: set[str], mutable: frozenset[str]) -> None:
    immutable = sorted(
        path for path in changed if not any(path == m or path.startswith(f"{m}.") for m in mutable)
    )
    if immutable:
        raise AzureRefusal(
            resource.id,
            f"cannot change {', '.join(immutable)} of an existing {resource.type.split(':')[-1]}: "
            f"only {', '.join(sorted(mutable))} can be updated; register a new version or name",
        )


def _with_ignored_changes(resource: PlannedResource, old: _Stored | None) -> dict[str, Any]:
    """The inputs the engine diffs and sends: each `ignore_changes` path keeps its old value
    whenever the state has the resource (by URN), a replacement with a new Azure name included
    (pulumi/pulumi pkg/resource/deploy/step_generator.go: `if hasOld` processIgnoreChanges on
    the goal's inputs, before the diff decides update or replace)."""
    inputs = copy.deepcopy(resource.inputs)
    if old is None:
        return inputs
    for path in resource.options.ignore_changes:
        *parents, leaf = path.split(".")
        new_parent: Any = inputs
        old_parent: Any = old.inputs
        for part in parents:
            new_parent = new_parent.setdefault(part, {})
            old_parent = old_parent.get(part) or {}
        if leaf in old_parent:
            new_parent[leaf] = copy.deepcopy(old_parent[leaf])
        else:
            new_parent.pop(leaf, None)
    return inputs


def _changed_paths(old: Any, new: Any, prefix: str = "") -> Iterator[str]:
    """Dotted paths of the leaves that differ (maps are compared key by key)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in sorted(set(old) | set(new)):
            yield from _changed_paths(old.get(key), new.get(key), f"{prefix}{key}.")
    elif old != new:
        yield prefix.rstrip(".")
