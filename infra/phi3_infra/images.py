"""The trainer and server images: tagged by a hash of their build context, built three ways.

- `local`: BuildKit on this machine through pulumi-docker-build, pushed with an ACR refresh token
  that an Entra ID token was exchanged for (the registry's admin user stays off; the token is a
  Pulumi secret).
- `remote`: an ACR build run in the stack's registry (no Docker needed): the context is uploaded
  to the registry's build-source URL, a DockerBuildRequest is scheduled and polled to the end.
- `prebuilt`: references given in config, used as they are.

The tag is the first 16 hex digits of a SHA-256 over every file the build would see (honouring
`.dockerignore`), with text files' line endings as sent (LF, `line_endings`), so an unchanged
folder keeps its tag, from any checkout, and nothing is rebuilt or retrained. Build arguments
append their values: the server image on an NVIDIA serving size is serving_image/Dockerfile's
`TORCH_VARIANT=cuda` variant, `<hash>-cuda`, from the same folder as the CPU image `<hash>`.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi.dynamic
import requests

from phi3_infra.api_versions import ACR_BUILD_API_VERSION
from phi3_infra.arm import ArmClient, ArmError, client_from_environment
from phi3_infra.config import ImageBuild, StackConfig, Stage
from phi3_infra.dynamic import Step
from phi3_infra.line_endings import read_as_sent
from phi3_infra.paths import SERVER_CONTEXT, TRAINER_CONTEXT
from phi3_infra.rbac import BuiltInRole, Deployer, assign_to_deployer
from phi3_infra.redaction import without_query
from phi3_infra.serving_gpus import serving_gpu
from phi3_infra.waiting import OperationFailed, Poll, poll_until_terminal

TAG_LENGTH = 16
ACR_RUN_SUCCEEDED = frozenset({"Succeeded"})
ACR_RUN_FAILED = frozenset({"Failed", "Canceled", "Error", "Timeout"})
_BUILD_TIMEOUT_S = 3600
_UPLOAD_TIMEOUT_S = 300
# The username ACR expects with a refresh token obtained from /oauth2/exchange.
ACR_TOKEN_USERNAME = "00000000-0000-0000-0000-000000000000"
# serving_image/Dockerfile's build argument: cpu (its default) or cuda.
TORCH_VARIANT_ARG = "TORCH_VARIANT"

BuildArgs = tuple[tuple[str, str], ...]  # (name, value) pairs, in the order the tag names them


class ImageContextError(ValueError):
    """A build context is missing or cannot be built; raised before any resource exists."""


# Docker's .dockerignore globs (Go filepath.Match plus `**`) as regular expressions.
_GLOB = re.compile(r"(\*\*/|\*\*|\*|\?)")
_GLOB_TOKENS = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}


def _ignore_rules(context: Path) -> list[tuple[re.Pattern[str], bool]]:
    """`.dockerignore` as (pattern, excludes) pairs; the last matching rule wins."""
    ignore_file = context / ".dockerignore"
    if not ignore_file.is_file():
        return []
    rules = []
    for raw in ignore_file.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = line.removeprefix("!").strip().strip("/")
        regex = "".join(_GLOB_TOKENS.get(part, re.escape(part)) for part in _GLOB.split(pattern))
        rules.append((re.compile(regex), not include))
    return rules


def _excluded(relative: str, rules: list[tuple[re.Pattern[str], bool]]) -> bool:
    """Docker's rule: a pattern matches a path or any of its parent folders."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern, excludes in rules:
        if any(pattern.fullmatch(candidate) for candidate in candidates):
            excluded = excludes
    return excluded


def context_files(context: Path) -> list[str]:
    """Relative paths of the files a `docker build` of `context` would send, sorted."""
    rules = _ignore_rules(context)
    files = []
    for root, _, names in os.walk(context):
        for name in names:
            relative = (Path(root) / name).relative_to(context).as_posix()
            if relative in ("Dockerfile", ".dockerignore") or not _excluded(relative, rules):
                files.append(relative)
    return sorted(files)


def context_hash(context: Path) -> str:
    """SHA-256 over each sent file's path and bytes (LF line endings, as `context_archive`
    sends them): the image's content address, the same from a CRLF checkout."""
    digest = hashlib.sha256()
    for relative in context_files(context):
        digest.update(relative.encode() + b"\0")
        digest.update(read_as_sent(context / relative) + b"\0")
    return digest.hexdigest()


def context_archive(context: Path) -> bytes:
    """The context as the gzipped tar an ACR build run takes: the files and bytes the hash
    covers, so the tag names exactly what the registry builds."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for relative in context_files(context):
            data = read_as_sent(context / relative)
            member = archive.gettarinfo(context / relative, arcname=relative)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


@dataclass(frozen=True)
class ImageSource:
    """One image to provide: a folder to build, or a reference given in config."""

    repository: str
    context: Path | None
    reference: str | None = None
    build_args: BuildArgs = ()

    @property
    def tag(self) -> str:
        """The content hash, then each build argument's value: the variants of one folder get
        tags (and so server environment versions and deployments) of their own."""
        if self.context is None:
            raise ValueError("a prebuilt image has no content tag")
        suffix = "".join(f"-{value}" for _, value in self.build_args)
        return context_hash(self.context)[:TAG_LENGTH] + suffix

    @property
    def identity(self) -> str:
        """What names this image's content at plan time: the given reference, or the tag."""
        return self.reference if self.reference is not None else self.tag


def server_build_args(instance_type: str) -> BuildArgs:
    """torch's CUDA build for an NVIDIA serving size (the SKU list's GPU rows, serving_gpus.py);
    none on a CPU size, whose image is the Dockerfile's default (cpu) with the tag it always had."""
    return ((TORCH_VARIANT_ARG, "cuda"),) if serving_gpu(instance_type) is not None else ()


def image_sources(config: StackConfig) -> dict[str, ImageSource]:
    """The images the enabled stages need, checked before any resource exists."""
    wanted = {
        "trainer": (Stage.TRAIN, TRAINER_CONTEXT, config.trainer_image, ()),
        "server": (
            Stage.SERVE,
            SERVER_CONTEXT,
            config.server_image,
            server_build_args(config.serving_instance_type),
        ),
    }
    sources, problems = {}, []
    for role, (stage, context, reference, build_args) in wanted.items():
        if stage not in config.stages:
            continue
        if config.image_build is ImageBuild.PREBUILT:
            sources[role] = ImageSource(f"phi3-{role}", None, reference)
        elif not (context / "Dockerfile").is_file():
            problems.append(
                f"{context / 'Dockerfile'} not found: the {role} image cannot be built "
                f"(imageBuild is {config.image_build.value!r}); add it, or set imageBuild to "
                f"'prebuilt' with phi3-foundry:{role}Image"
            )
        else:
            sources[role] = ImageSource(f"phi3-{role}", context, build_args=build_args)
    if problems:
        raise ImageContextError("\n".join(problems))
    return sources


RegistryToken = Callable[[str, str], str]


def exchange_acr_refresh_token(
    login_server: str, tenant_id: str, credential: Any = None, *, scheme: str = "https"
) -> str:
    """Trade an Entra ID access token for an ACR refresh token (POST /oauth2/exchange)."""
    from phi3_infra.credentials import (
        AZURE_PUBLIC,
        cloud_from_environment,
        credential_from_environment,
    )

    if credential is None:
        credential = credential_from_environment()
    # An ARM token of the stack's cloud (ARM_ENVIRONMENT), as ACR's exchange takes it.
    arm = (cloud_from_environment() or AZURE_PUBLIC).resource_manager
    access_token = credential.get_token(f"{arm}/.default").token
    response = requests.post(
        f"{scheme}://{login_server}/oauth2/exchange",
        data={
            "grant_type": "access_token",
            "service": login_server,
            "tenant": tenant_id,
            "access_token": access_token,
        },
        timeout=30,
    )
    if response.status_code != 200:
        raise RuntimeError(
            f"{login_server} refused the token exchange ({response.status_code}): "
            f"{response.text[:300]}; the signed-in identity needs AcrPush on the registry"
        )
    return str(response.json()["refresh_token"])


@dataclass(frozen=True)
class ImagesArgs:
    config: StackConfig
    sources: Mapping[str, ImageSource]
    registry_name: str  # deterministic Azure name, for the push role assignment's name
    registry_id: pulumi.Input[str]
    login_server: pulumi.Input[str]
    tenant_id: pulumi.Input[str]
    deployer: Deployer
    registry_token: RegistryToken = exchange_acr_refresh_token


class ContainerImages(pulumi.ComponentResource):
    """`refs[role]` is the pullable reference of each image the stages need."""

    refs: dict[str, pulumi.Output[str]]

    def __init__(
        self, name: str, args: ImagesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("phi3:images:ContainerImages", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.refs = {}
        if args.config.image_build is ImageBuild.LOCAL and any(
            source.reference is None for source in args.sources.values()
        ):
            # Whoever runs `pulumi up` pushes with their own Entra identity: AcrPush, no admin.
            pusher = assign_to_deployer(
                scope_name=args.registry_name,
                scope_id=args.registry_id,
                role=BuiltInRole.ACR_PUSH,
                deployer=args.deployer,
                parent=self,
            )
            child = pulumi.ResourceOptions(parent=self, depends_on=[pusher])
        for role, source in args.sources.items():
            if source.reference is not None:
                self.refs[role] = pulumi.Output.from_input(source.reference)
                continue
            assert source.context is not None
            ref = pulumi.Output.concat(args.login_server, f"/{source.repository}:{source.tag}")
            if args.config.image_build is ImageBuild.LOCAL:
                self.refs[role] = _local_build(role, source, ref, args, child)
            else:
                build = RegistryBuild(
                    f"{role}-image",
                    RegistryBuildInputs(
                        registry_id=args.registry_id,
                        image=f"{source.repository}:{source.tag}",
                        context=str(source.context),
                        reference=ref,
                        build_args=dict(source.build_args),
                    ),
                    child,
                )
                self.refs[role] = build.reference
        self.register_outputs(dict(self.refs))


def _local_build(
    role: str,
    source: ImageSource,
    ref: pulumi.Output[str],
    args: ImagesArgs,
    opts: pulumi.ResourceOptions,
) -> pulumi.Output[str]:
    import pulumi_docker_build as docker_build

    exchanged: pulumi.Output[str] = pulumi.Output.all(args.login_server, args.tenant_id).apply(
        lambda values: args.registry_token(values[0], values[1])
    )
    # A secret from the start: encrypted in state, masked in logs.
    token: pulumi.Output[str] = pulumi.Output.secret(exchanged)
    assert source.context is not None
    image = docker_build.Image(
        f"{role}-image",
        context=docker_build.BuildContextArgs(location=str(source.context)),
        dockerfile=docker_build.DockerfileArgs(location=str(source.context / "Dockerfile")),
        build_args=dict(source.build_args) or None,
        platforms=[docker_build.Platform.LINUX_AMD64],
        tags=[ref],
        push=True,
        registries=[
            docker_build.RegistryArgs(
                address=args.login_server, username=ACR_TOKEN_USERNAME, password=token
            )
        ],
        opts=opts,
    )
    # Pin what Azure ML pulls to the digest that was pushed.
    return pulumi.Output.concat(ref, "@", image.digest)


class BuildSourceUploadError(RuntimeError):
    """The build context did not reach the registry's upload URL."""


def upload_build_source(upload_url: str, archive: bytes) -> None:
    """PUT the context archive to the SAS URL ACR handed out; errors never show the SAS."""
    where = without_query(upload_url)
    try:
        response = requests.put(
            upload_url,
            data=archive,
            headers={"x-ms-blob-type": "BlockBlob"},
            timeout=_UPLOAD_TIMEOUT_S,
        )
    except requests.RequestException as exc:
        # requests puts the full URL, SAS included, into its messages: keep only the kind of
        # failure, and drop the chained exception so the traceback cannot show it either.
        raise BuildSourceUploadError(
            f"uploading the build context to {where} failed: {type(exc).__name__}"
        ) from None
    if not response.ok:
        code = response.headers.get("x-ms-error-code", "no error code")
        raise BuildSourceUploadError(
            f"uploading the build context to {where} answered {response.status_code} {code}"
        )


def run_registry_build(
    client: ArmClient,
    registry_id: str,
    context: Path,
    image: str,
    poll: Poll,
    build_args: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Upload the context, schedule an ACR build-and-push run, and wait for it to succeed."""
    upload = client.post_json(f"{registry_id}/listBuildSourceUploadUrl", ACR_BUILD_API_VERSION)
    upload_build_source(upload["uploadUrl"], context_archive(context))
    # DockerBuildRequest `arguments`, "override arguments to be used when executing the run":
    # Argument {name, value, isSecret} (containerregistry_build.json 2019-06-01-preview;
    # examples/RegistriesScheduleRun.json). None of ours is a secret.
    arguments = [
        {"name": name, "value": value, "isSecret": False}
        for name, value in (build_args or {}).items()
    ]
    # Registries_ScheduleRun is a long-running POST: 200 with the run, or 202 with no body
    # (azure-rest-api-specs containerregistry 2019-06-01-preview containerregistry_build.json,
    # examples/RegistriesScheduleRun.json); the run is then the operation's result, as the Azure
    # CLI reads it (azure-cli containerapp `_utils.py`: LongRunningOperation(begin_schedule_run)).
    run = client.post_and_wait(
        f"{registry_id}/scheduleRun",
        ACR_BUILD_API_VERSION,
        poll,
        f"scheduling the registry build of {image}",
        {
            "type": "DockerBuildRequest",
            "imageNames": [image],
            "isPushEnabled": True,
            "sourceLocation": upload["relativePath"],
            "dockerFilePath": "Dockerfile",
            "platform": {"os": "Linux", "architecture": "amd64"},
            "timeout": _BUILD_TIMEOUT_S,
        }
        | ({"arguments": arguments} if arguments else {}),
    )
    run_id = (run.get("properties") or {}).get("runId")
    if not run_id:
        raise ArmError(
            f"scheduling the registry build of {image}: ARM answered without a run id; "
            f"list the registry's runs with `az acr task list-runs --registry "
            f"{registry_id.rsplit('/', 1)[-1]}` and rerun `pulumi up`"
        )
    # The run's log link (listLogSasUrl) is a SAS URL: messages name the command that fetches
    # the log with the reader's own sign-in instead of printing a credential.
    logs_command = f"az acr task logs --registry {registry_id.rsplit('/', 1)[-1]} --run-id {run_id}"
    final = poll_until_terminal(
        client,
        f"{registry_id}/runs/{run_id}",
        ACR_BUILD_API_VERSION,
        ACR_RUN_SUCCEEDED | ACR_RUN_FAILED,
        poll,
        f"registry build {run_id} of {image}",
        advice=(
            f"Follow it with `{logs_command}`; the next `pulumi up` builds anew, or set "
            "phi3-foundry:imageBuild to 'local' to build on this machine."
        ),
    )
    status = final["properties"]["status"]
    if status in ACR_RUN_FAILED:
        reason = final["properties"].get("runErrorMessage") or "no error message"
        raise OperationFailed(
            f"registry build {run_id} of {image} {status}: {reason}\nlogs: {logs_command}"
        )
    return dict(final)


@dataclass(frozen=True)
class RegistryBuildInputs:
    registry_id: pulumi.Input[str]
    image: str  # repository:tag
    context: str
    reference: pulumi.Input[str]  # login server/repository:tag, what Azure ML pulls
    build_args: dict[str, str]  # the tag names their values: a change is a new image


class _RegistryBuildProvider(Step):
    """Builds in the registry on create; a new tag (new content) replaces the resource."""

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        with client_from_environment() as client:
            run = run_registry_build(
                client,
                props["registry_id"],
                Path(props["context"]),
                props["image"],
                Poll(timeout_s=_BUILD_TIMEOUT_S, interval_s=10),
                props["build_args"],
            )
        return pulumi.dynamic.CreateResult(
            id_=props["reference"], outs={**props, "runId": run["properties"]["runId"]}
        )

    replaced_by = ("registry_id", "image")

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Images stay in the registry until the registry goes; nothing billable remains."""


class RegistryBuild(pulumi.dynamic.Resource):
    reference: pulumi.Output[str]

    def __init__(
        self, name: str, inputs: RegistryBuildInputs, opts: pulumi.ResourceOptions
    ) -> None:
        super().__init__(_RegistryBuildProvider(), name, {**vars(inputs), "runId": None}, opts)
