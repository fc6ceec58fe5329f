"""Run the real program under Pulumi's mocks: no CLI, no credentials, no Azure.

Shared by the offline plan (phi3_infra.cli.plan), the rehearsal and the tests. The mocks answer
like ARM would for the fields the program reads back (ids, names, principal ids, login servers);
everything else echoes the inputs, so the recorded resources show exactly what `pulumi up` would
send.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import pickle
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs, Mocks

from phi3_infra.stack_files import PROJECT

SUBSCRIPTION_ID = "00000000-0000-4000-8000-000000000001"
TENANT_ID = "00000000-0000-4000-8000-000000000002"
CLIENT_OBJECT_ID = "00000000-0000-4000-8000-000000000003"
_MOCK_NAMESPACE = uuid.UUID("1e6b7e0e-3c55-4d1c-9a8e-0c5f1f4b7a10")

# azure-native token -> (ARM resource type path, input that holds the Azure name).
ARM_TYPES: Mapping[str, tuple[str, str]] = {
    "azure-native:resources:ResourceGroup": (
        "Microsoft.Resources/resourceGroups",
        "resourceGroupName",
    ),
    "azure-native:storage:StorageAccount": ("Microsoft.Storage/storageAccounts", "accountName"),
    "azure-native:keyvault:Vault": ("Microsoft.KeyVault/vaults", "vaultName"),
    "azure-native:containerregistry:Registry": (
        "Microsoft.ContainerRegistry/registries",
        "registryName",
    ),
    "azure-native:operationalinsights:Workspace": (
        "Microsoft.OperationalInsights/workspaces",
        "workspaceName",
    ),
    "azure-native:applicationinsights:Component": ("Microsoft.Insights/components", "resourceName"),
    "azure-native:machinelearningservices:Workspace": (
        "Microsoft.MachineLearningServices/workspaces",
        "workspaceName",
    ),
    "azure-native:managedidentity:UserAssignedIdentity": (
        "Microsoft.ManagedIdentity/userAssignedIdentities",
        "resourceName",
    ),
    "azure-native:authorization:RoleAssignment": (
        "Microsoft.Authorization/roleAssignments",
        "roleAssignmentName",
    ),
    # Child resources: `{input}` fields are filled from the inputs.
    "azure-native:machinelearningservices:Compute": (
        "Microsoft.MachineLearningServices/workspaces/{workspaceName}/computes",
        "computeName",
    ),
    "azure-native:storage:BlobContainer": (
        "Microsoft.Storage/storageAccounts/{accountName}/blobServices/default/containers",
        "containerName",
    ),
    # Asset versions: ARM names them by their version, under the asset's name.
    "azure-native:machinelearningservices:DataVersion": (
        "Microsoft.MachineLearningServices/workspaces/{workspaceName}/data/{name}/versions",
        "version",
    ),
    "azure-native:machinelearningservices:EnvironmentVersion": (
        "Microsoft.MachineLearningServices/workspaces/{workspaceName}/environments/{name}/versions",
        "version",
    ),
    "azure-native:machinelearningservices:ModelVersion": (
        "Microsoft.MachineLearningServices/workspaces/{workspaceName}/models/{name}/versions",
        "version",
    ),
    # A job's name is its `id` input.
    "azure-native:machinelearningservices:Job": (
        "Microsoft.MachineLearningServices/workspaces/{workspaceName}/jobs",
        "id",
    ),
    "azure-native:machinelearningservices:OnlineEndpoint": (
        "Microsoft.MachineLearningServices/workspaces/{workspaceName}/onlineEndpoints",
        "endpointName",
    ),
    "azure-native:machinelearningservices:OnlineDeployment": (
        "Microsoft.MachineLearningServices/workspaces/{workspaceName}/onlineEndpoints"
        "/{endpointName}/deployments",
        "deploymentName",
    ),
}
LIST_ENDPOINT_KEYS = "azure-native:machinelearningservices:listOnlineEndpointKeys"
DOCKER_BUILD_IMAGE = "docker-build:index:Image"


def _guid(*parts: str) -> str:
    return str(uuid.uuid5(_MOCK_NAMESPACE, "|".join(parts)))


def _arm_id(token: str, name: str, inputs: Mapping[str, Any]) -> str:
    _, module, type_name = token.split(":")
    arm_type = ARM_TYPES.get(token, (f"Mock.{module}/{type_name}", ""))[0].format_map(inputs)
    if token == "azure-native:resources:ResourceGroup":
        return f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{name}"
    if token == "azure-native:authorization:RoleAssignment":
        return f"{inputs['scope']}/providers/{arm_type}/{name}"
    group = inputs.get("resourceGroupName", "unknown-group")
    return f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{group}/providers/{arm_type}/{name}"


def _identity_output(identity: Mapping[str, Any], arm_id: str) -> dict[str, Any]:
    """Managed identity block as ARM returns it: principal ids, and user identities as a map."""
    result: dict[str, Any] = {"type": identity["type"]}
    if "SystemAssigned" in identity["type"]:
        result |= {"principalId": _guid(arm_id, "system"), "tenantId": TENANT_ID}
    user_ids = identity.get("userAssignedIdentities") or []
    if user_ids:
        result["userAssignedIdentities"] = {
            user_id: {"principalId": _guid(user_id, "principal"), "clientId": _guid(user_id)}
            for user_id in user_ids
        }
    return result


class AzureMocks(Mocks):
    """Echo inputs and add the read-only outputs ARM would compute."""

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        if args.typ == DOCKER_BUILD_IMAGE:
            pushed = "|".join(args.inputs.get("tags", []))
            digest = "sha256:" + hashlib.sha256(pushed.encode()).hexdigest()
            return f"{args.name}-image", dict(args.inputs) | {"digest": digest}
        if not args.typ.startswith("azure-native:"):
            return None, dict(args.inputs)
        _, name_key = ARM_TYPES.get(args.typ, ("", ""))
        name = args.inputs.get(name_key) or args.name
        arm_id = _arm_id(args.typ, name, args.inputs)
        state = dict(args.inputs) | {"name": name, "id": arm_id}
        if "identity" in args.inputs:
            state["identity"] = _identity_output(args.inputs["identity"], arm_id)
        if args.typ == "azure-native:managedidentity:UserAssignedIdentity":
            state |= {
                "principalId": _guid(arm_id, "principal"),
                "clientId": _guid(arm_id),
                "tenantId": TENANT_ID,
            }
        if args.typ == "azure-native:containerregistry:Registry":
            state["loginServer"] = f"{name}.azurecr.io"
        if args.typ == "azure-native:storage:StorageAccount":
            state["primaryEndpoints"] = {"blob": f"https://{name}.blob.core.windows.net/"}
        if args.typ == "azure-native:machinelearningservices:OnlineEndpoint":
            host = f"https://{name}.{args.inputs['location']}.inference.ml.azure.com"
            state["properties"] = dict(args.inputs["properties"]) | {
                "scoringUri": f"{host}/score",
                "swaggerUri": f"{host}/swagger.json",
                "provisioningState": "Succeeded",
            }
        return arm_id, state

    def call(self, args: MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        if args.token == "azure-native:authorization:getClientConfig":
            return {
                "clientId": _guid("client"),
                "objectId": CLIENT_OBJECT_ID,
                "subscriptionId": SUBSCRIPTION_ID,
                "tenantId": TENANT_ID,
            }, []
        if args.token == LIST_ENDPOINT_KEYS:
            endpoint = str(args.args["endpointName"])
            return {
                "primaryKey": _guid(endpoint, "primary").replace("-", ""),
                "secondaryKey": _guid(endpoint, "secondary").replace("-", ""),
            }, []
        raise NotImplementedError(f"no offline answer for invoke {args.token}")


def input_at(values: Mapping[str, Any], dotted: str) -> Any:
    """The value at a dotted path of wire-format inputs ('sku.name'), or None where it is absent."""
    value: Any = values
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


@dataclass(frozen=True)
class LifecycleOptions:
    """The resource options the engine applies when it diffs and deletes (wire names)."""

    ignore_changes: tuple[str, ...] = ()
    retain_on_delete: bool = False
    delete_before_replace: bool = False


@dataclass(frozen=True)
class PlannedResource:
    """One resource `pulumi up` would register, with the inputs it would send."""

    type: str
    name: str
    urn: str
    parent_urn: str
    custom: bool
    id: str | None
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    # URNs this resource waits for: `depends_on` plus the resources its inputs come from.
    dependencies: frozenset[str] = frozenset()
    options: LifecycleOptions = LifecycleOptions()

    @property
    def azure_name(self) -> str | None:
        return self.outputs.get("name") if self.custom else None


class _RecordingMonitor(MockMonitor):
    """MockMonitor that also remembers each resource's parent and inputs."""

    def __init__(self, mocks: Mocks) -> None:
        super().__init__(mocks)
        self.parents: dict[str, str] = {}
        self.requests: dict[str, tuple[str, str, bool, dict[str, Any]]] = {}
        self.dependencies: dict[str, frozenset[str]] = {}
        self.options: dict[str, LifecycleOptions] = {}
        self._lock = threading.Lock()

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]  # Pulumi's
        if request.type != "pulumi:pulumi:Stack":
            inputs = pulumi.runtime.rpc.deserialize_properties(request.object)
            waits_for = set(request.dependencies)
            for property_dependencies in request.propertyDependencies.values():
                waits_for.update(property_dependencies.urns)
            with self._lock:
                self.parents[response.urn] = request.parent
                self.requests[response.urn] = (request.type, request.name, request.custom, inputs)
                self.dependencies[response.urn] = frozenset(waits_for)
                self.options[response.urn] = LifecycleOptions(
                    ignore_changes=tuple(request.ignoreChanges),
                    retain_on_delete=bool(request.retainOnDelete),
                    delete_before_replace=request.deleteBeforeReplace,
                )
        return response


@dataclass
class OfflineRun:
    resources: list[PlannedResource] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    # Stack outputs Pulumi would store encrypted and print as [secret].
    secret_outputs: set[str] = field(default_factory=set)

    def of_type(self, token: str) -> list[PlannedResource]:
        return [resource for resource in self.resources if resource.type == token]

    def named(self, logical_name: str) -> PlannedResource:
        (match,) = [resource for resource in self.resources if resource.name == logical_name]
        return match

    def waits_for(self, later: str, earlier: str) -> bool:
        """Whether `later` (logical name) is created only after `earlier`, directly or through
        other resources; a component counts as done when its children are."""
        by_urn = {resource.urn: resource for resource in self.resources}
        target = self.named(earlier).urn
        seen: set[str] = set()
        pending = list(self.named(later).dependencies)
        while pending:
            urn = pending.pop()
            if urn == target:
                return True
            if urn in seen or urn not in by_urn:
                continue
            seen.add(urn)
            pending.extend(by_urn[urn].dependencies)
            # A dependency on a component is a dependency on everything inside it.
            pending.extend(r.urn for r in self.resources if r.parent_urn == urn)
        return False


@contextlib.contextmanager
def _pickler_restored() -> Iterator[None]:
    """Undo what pulumi.dynamic's serialize_provider leaves behind: every call wraps
    `pickle._Pickler._batch_setitems` in one more sorting layer and never restores it
    (pulumi/dynamic/dynamic.py), so a process that plans many stacks (the tests) nests them
    until any pure-Python pickling (dill, `datasets`' fingerprints) hits the recursion limit."""
    saved = pickle._Pickler._batch_setitems, pickle._Pickler.save_dict  # type: ignore[attr-defined]
    try:
        yield
    finally:
        pickle._Pickler._batch_setitems, pickle._Pickler.save_dict = saved  # type: ignore[attr-defined]


def run_offline(
    program: Callable[[], Mapping[str, Any]], config: Mapping[str, str], stack: str
) -> OfflineRun:
    """Run `program` (returning its stack outputs) under mocks with the given flat config."""
    with _pickler_restored():
        return _run_offline(program, config, stack)


def _run_offline(
    program: Callable[[], Mapping[str, Any]], config: Mapping[str, str], stack: str
) -> OfflineRun:
    mocks = AzureMocks()
    monitor = _RecordingMonitor(mocks)
    # Drop the previous run's root stack so each run gets its own stack URN.
    pulumi.runtime.reset_options(project=PROJECT, stack=stack)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)
    pulumi.runtime.set_all_config(dict(config))
    run = OfflineRun()

    def record_outputs(outputs: dict[str, Any]) -> None:
        run.outputs.update(outputs)

    async def record_secrets(outputs: Mapping[str, Any]) -> None:
        for key, value in outputs.items():
            if isinstance(value, pulumi.Output) and await value.is_secret():
                run.secret_outputs.add(key)

    @pulumi.runtime.test
    def execute() -> pulumi.Output[None]:
        outputs = dict(program())
        pending: Awaitable[None] = asyncio.ensure_future(record_secrets(outputs))
        secrets: pulumi.Output[None] = pulumi.Output.from_input(pending)
        return pulumi.Output.all(secrets, pulumi.Output.from_input(outputs)).apply(
            lambda values: record_outputs(values[1])
        )

    execute()
    for urn, (typ, name, custom, inputs) in monitor.requests.items():
        registration = monitor.resources.get(urn)
        run.resources.append(
            PlannedResource(
                type=typ,
                name=name,
                urn=urn,
                parent_urn=monitor.parents[urn],
                custom=custom,
                id=registration.id if registration else None,
                inputs=inputs,
                outputs=dict(registration.state) if registration else {},
                dependencies=monitor.dependencies[urn],
                options=monitor.options[urn],
            )
        )
    return run
