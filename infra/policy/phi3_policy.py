"""The security baseline as pulumi-policy rules (pack: infra/policy/).

Kept importable without side effects: constructing a PolicyPack starts the analyzer server and
blocks, so only `build_policy_pack` does that. Props are the resource inputs by wire name
(camelCase), which is what the engine hands a policy on preview and up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyPack,
    PolicyResourceOptions,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

# The tags every taggable resource must carry (the program sets them: phi3_infra.tags).
REQUIRED_TAG_KEYS = ("project", "stack", "owner", "expiresOn")


PACK_NAME = "phi3-security-baseline"
STORAGE = "azure-native:storage:StorageAccount"
REGISTRY = "azure-native:containerregistry:Registry"
VAULT = "azure-native:keyvault:Vault"
ML_WORKSPACE = "azure-native:machinelearningservices:Workspace"
# Azure types that carry no tags (extension resources, blob containers).
UNTAGGABLE = frozenset(
    {"azure-native:authorization:RoleAssignment", "azure-native:storage:BlobContainer"}
)
# Azure ML assets and jobs are not tracked resources: their tags sit inside `properties`.
TAGS_IN_PROPERTIES = frozenset(
    f"azure-native:machinelearningservices:{kind}"
    for kind in ("Job", "DataVersion", "EnvironmentVersion", "ModelVersion")
)


def _require(
    args: ResourceValidationArgs,
    report: ReportViolation,
    props: Mapping[str, Any],
    expected: Mapping[str, Any],
) -> None:
    for key, value in expected.items():
        if props.get(key) != value:
            report(f"{args.name}: {key} must be {value!r}, got {props.get(key)!r}", args.urn)


def _registry_locked_down(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type == REGISTRY:
        expected = {"adminUserEnabled": False, "anonymousPullEnabled": False}
        _require(args, report, args.props, expected)


def _storage_no_shared_key(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type == STORAGE:
        _require(args, report, args.props, {"allowSharedKeyAccess": False})


def _storage_no_public_blob(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type == STORAGE:
        _require(args, report, args.props, {"allowBlobPublicAccess": False})


def _storage_tls12(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type == STORAGE:
        expected = {"enableHttpsTrafficOnly": True, "minimumTlsVersion": "TLS1_2"}
        _require(args, report, args.props, expected)


def _vault_rbac(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type == VAULT:
        expected = {"enableRbacAuthorization": True, "enableSoftDelete": True}
        _require(args, report, args.props.get("properties") or {}, expected)


def _hub_identity_datastores(args: ResourceValidationArgs, report: ReportViolation) -> None:
    # With shared keys disabled, a hub on key-based datastores cannot reach its own storage.
    if args.resource_type == ML_WORKSPACE and args.props.get("kind") == "Hub":
        _require(args, report, args.props, {"systemDatastoresAuthMode": "Identity"})


def _required_tags(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if not args.resource_type.startswith("azure-native:") or args.resource_type in UNTAGGABLE:
        return
    holder = (
        args.props.get("properties") or {}
        if args.resource_type in TAGS_IN_PROPERTIES
        else args.props
    )
    tags = holder.get("tags") or {}
    missing = [key for key in REQUIRED_TAG_KEYS if not tags.get(key)]
    if missing:
        report(
            f"{args.name}: missing tags {missing} (required: {list(REQUIRED_TAG_KEYS)})", args.urn
        )


POLICIES: tuple[ResourceValidationPolicy, ...] = tuple(
    ResourceValidationPolicy(name=name, description=description, validate=validate)
    for name, description, validate in (
        ("acr-no-admin-user", "Container registries: no admin user, no anonymous pull.",
         _registry_locked_down),
        ("storage-no-shared-key", "Storage accounts: shared-key access disabled.",
         _storage_no_shared_key),
        ("storage-no-public-blob", "Storage accounts: no public blob access.",
         _storage_no_public_blob),
        ("storage-https-tls12", "Storage accounts: HTTPS only, TLS 1.2 minimum.", _storage_tls12),
        ("keyvault-rbac", "Key vaults: RBAC authorization and soft delete.", _vault_rbac),
        ("hub-identity-datastores", "Foundry hubs: identity-based system datastores.",
         _hub_identity_datastores),
        ("required-tags", f"Taggable Azure resources carry {list(REQUIRED_TAG_KEYS)}.",
         _required_tags),
    )
)  # fmt: skip


@dataclass(frozen=True)
class Violation:
    policy: str
    urn: str
    message: str


def validation_args(
    resource_type: str, props: Mapping[str, Any], urn: str, name: str
) -> ResourceValidationArgs:
    """Arguments as the analyzer builds them, for running policies outside the engine."""
    options = PolicyResourceOptions(
        protect=False,
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
    )
    return ResourceValidationArgs(resource_type, props, urn, name, options, None)


def check(args: ResourceValidationArgs) -> list[Violation]:
    """Every violation of every policy for one resource."""
    violations: list[Violation] = []
    for policy in POLICIES:

        def report(message: str, urn: str | None = None, name: str = policy.name) -> None:
            violations.append(Violation(name, urn or args.urn, message))

        policy.validate(args, report)
    return violations


def check_all(resources: Iterable[ResourceValidationArgs]) -> list[Violation]:
    return [violation for args in resources for violation in check(args)]


def build_policy_pack() -> PolicyPack:
    """Start the analyzer (blocks): only for the pack's __main__."""
    return PolicyPack(
        name=PACK_NAME, policies=list(POLICIES), enforcement_level=EnforcementLevel.MANDATORY
    )
