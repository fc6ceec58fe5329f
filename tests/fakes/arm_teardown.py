"""Routes of the fake ARM server for what a destroy leaves and what it deletes for good outside
azure-native: resource groups and their resources, by group or by tag (what the teardown audit
reads), Log Analytics workspaces with their delete (soft, or for good with `force=true`) and the
listing of the soft-deleted ones.

Answers start from the specs' examples (spec_examples/): resources stable/2021-04-01
CreateResourceGroup.json (the ResourceGroup a GET returns), operationalinsights stable/2025-07-01
WorkspacesDelete.json, OperationStatusesGet.json and WorkspacesSubscriptionList.json (the example
of DeletedWorkspaces_List). Behaviour follows Workspaces_Delete's description in Workspaces.json
("The name is kept for 14 days ... To remove the workspace completely and release the name, use
the force flag") and MicrosoftDocs/azure-monitor-docs articles/azure-monitor/logs/
delete-workspace.md (a soft-deleted workspace is recovered, not deleted again; a 204 means there
was nothing to delete).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.arm_server import Answer, FakeArm
from tests.fakes.examples import example_answer, example_response

_SUB = r"/subscriptions/(?P<sub>[^/]+)"
_GROUP = _SUB + r"/resourcegroups/(?P<rg>[^/]+)"
_GROUP_OF_ID = re.compile(r"/resourcegroups/([^/]+)/", re.IGNORECASE)
_TAG_FILTER = re.compile(r"tagName eq '(?P<name>[^']+)' and tagValue eq '(?P<value>[^']+)'")
_OI = r"/providers/Microsoft\.OperationalInsights"
RESOURCE_GROUP = "resources__2021-04-01__CreateResourceGroup"
WORKSPACE_DELETE = "operationalinsights__2025-07-01__WorkspacesDelete"
OPERATION_STATUS = "operationalinsights__2025-07-01__OperationStatusesGet"
DELETED_WORKSPACES = "operationalinsights__2025-07-01__WorkspacesSubscriptionList"
_EXAMPLE_HOST = "https://management.azure.com"


def _group_not_found(group: str) -> tuple[int, Any]:
    # ARM's answer for a group that does not exist, as Azure/azure-powershell#12841 quotes it for
    # a Log Analytics delete in a deleted group.
    message = f"Resource group '{group}' could not be found."
    return 404, {"error": {"code": "ResourceGroupNotFound", "message": message}}


@dataclass
class TeardownArm:
    """State behind the routes; `install` adds them to a FakeArm."""

    fake: FakeArm
    # Resource groups by lowercase name: ResourceGroups_Get's answer.
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Resources, each {"id", "name", "type", "location", "tags"}.
    resources: list[dict[str, Any]] = field(default_factory=list)
    # Live Log Analytics workspaces: lowercase name -> (group, location).
    log_analytics: dict[str, tuple[str, str]] = field(default_factory=dict)
    deleted_log_analytics: list[dict[str, Any]] = field(default_factory=list)

    def install(self) -> TeardownArm:
        fake = self.fake
        fake.route("GET", _GROUP, self._get_group)
        fake.route("GET", _GROUP + r"/resources", self._list_group_resources)
        fake.route("GET", _SUB + r"/resourcegroups", self._list_groups)
        fake.route("GET", _SUB + r"/resources", self._list_resources)
        fake.route("GET", _SUB + _OI + r"/deletedWorkspaces", self._list_deleted)
        fake.route("DELETE", _GROUP + _OI + r"/workspaces/(?P<ws>[^/]+)", self._delete_workspace)
        fake.route(
            "GET",
            _SUB + _OI + r"/locations/(?P<loc>[^/]+)/operationstatuses/(?P<op>[^/]+)",
            self._operation_status,
        )
        return self

    # -- scripting ----------------------------------------------------------------------------
    def add_group(
        self, name: str, location: str = "eastus2", tags: dict[str, str] | None = None
    ) -> None:
        """A resource group: the ResourceGroup of the example, as this one."""
        body = example_response(RESOURCE_GROUP)
        body |= {
            "id": f"/subscriptions/{self.fake.subscription_id}/resourceGroups/{name}",
            "name": name,
            "location": location,
            "tags": tags or {},
        }
        self.groups[name.lower()] = body

    def add_resource(
        self, group: str, resource_type: str, name: str, tags: dict[str, str] | None = None
    ) -> str:
        arm_id = (
            f"/subscriptions/{self.fake.subscription_id}/resourceGroups/{group}"
            f"/providers/{resource_type}/{name}"
        )
        location = self.groups[group.lower()]["location"]
        self.resources.append(
            {"id": arm_id, "name": name, "type": resource_type, "location": location,
             "tags": tags or {}}
        )  # fmt: skip
        return arm_id

    def delete_group(self, name: str) -> None:
        """What deleting a group does: its resources go with it (a Log Analytics workspace into
        soft delete: delete-workspace.md, "If your workspace was deleted as part of a resource
        group delete operation")."""
        del self.groups[name.lower()]
        self.resources = [r for r in self.resources if _group_of(r["id"]) != name.lower()]
        for workspace, (group, location) in list(self.log_analytics.items()):
            if group.lower() == name.lower():
                del self.log_analytics[workspace]
                self.soft_delete_log_analytics(workspace, group, location)

    def add_log_analytics(self, name: str, group: str, location: str = "eastus2") -> None:
        if group.lower() not in self.groups:
            self.add_group(group, location)
        self.log_analytics[name.lower()] = (group, location)

    def soft_delete_log_analytics(self, name: str, group: str, location: str = "eastus2") -> None:
        """A workspace of `group` deleted without force: DeletedWorkspaces_List's example item,
        as this one (the example's id spells the path in lowercase, as ARM may)."""
        (item,) = example_response(DELETED_WORKSPACES)["value"]
        item |= {
            "id": (
                f"/subscriptions/{self.fake.subscription_id}/resourcegroups/{group.lower()}"
                f"/providers/microsoft.operationalinsights/workspaces/{name.lower()}"
            ),
            "name": name,
            "location": location,
            "tags": {},
        }
        self.deleted_log_analytics.append(item)

    # -- routes -------------------------------------------------------------------------------
    def _get_group(self, fake: FakeArm, query: Any, m: re.Match[str]) -> tuple[int, Any]:
        group = self.groups.get(m["rg"].lower())
        return (200, group) if group is not None else _group_not_found(m["rg"])

    def _list_group_resources(self, fake: FakeArm, query: Any, m: re.Match[str]) -> tuple[int, Any]:
        """Resources_ListByResourceGroup: the specs' example (ListResources.json) has an empty
        body; the items carry GenericResourceExpanded's id, name, type, location and tags."""
        if m["rg"].lower() not in self.groups:
            return _group_not_found(m["rg"])
        return 200, {"value": [r for r in self.resources if _group_of(r["id"]) == m["rg"].lower()]}

    def _list_groups(self, fake: FakeArm, query: Any, m: re.Match[str]) -> tuple[int, Any]:
        return _tagged(list(self.groups.values()), query)

    def _list_resources(self, fake: FakeArm, query: Any, m: re.Match[str]) -> tuple[int, Any]:
        return _tagged(self.resources, query)

    def _list_deleted(self, fake: FakeArm, query: Any, m: re.Match[str]) -> tuple[int, Any]:
        return 200, {"value": self.deleted_log_analytics}

    def _delete_workspace(self, fake: FakeArm, query: Any, m: re.Match[str]) -> Answer:
        """Workspaces_Delete: 202 with the example's headers (both followed to this fake), the
        workspace gone at once; into soft delete unless `force=true`. No live workspace there:
        204, or the group's 404 when the group is gone."""
        if m["rg"].lower() not in self.groups:
            return _group_not_found(m["rg"])
        live = self.log_analytics.get(m["ws"].lower())
        if live is None or live[0].lower() != m["rg"].lower():
            return example_answer(WORKSPACE_DELETE, "204")
        del self.log_analytics[m["ws"].lower()]
        if query.get("force") != ["true"]:
            self.soft_delete_log_analytics(m["ws"], live[0], live[1])
        status, body, headers = example_answer(WORKSPACE_DELETE, "202")
        for name, url in headers.items():
            url = url.replace(_EXAMPLE_HOST, fake.url)
            url = url.replace("00000000-0000-0000-0000-00000000000/", f"{m['sub']}/", 1)
            headers[name] = url.replace("oiautorest6685", m["rg"], 1).replace(
                "oiautorest6685", m["ws"]
            )
        return status, body, headers

    def _operation_status(self, fake: FakeArm, query: Any, m: re.Match[str]) -> tuple[int, Any]:
        """OperationStatuses_Get: the example's Succeeded, for this operation."""
        body = example_response(OPERATION_STATUS)
        body |= {
            "id": f"/subscriptions/{m['sub']}/locations/{m['loc']}/operationStatuses/{m['op']}",
            "name": m["op"],
        }
        return 200, body


def _group_of(arm_id: str) -> str:
    match = _GROUP_OF_ID.search(arm_id)
    return match.group(1).lower() if match else ""


def _tagged(items: list[dict[str, Any]], query: Any) -> tuple[int, Any]:
    """ResourceGroups_List and Resources_List with a tag filter, the form resources.json's
    `$filter` describes: "You can filter by tag names and values. For example, to filter for a
    tag name and value, use $filter=tagName eq 'tag1' and tagValue eq 'Value1'"."""
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
