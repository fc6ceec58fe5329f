"""Container Registry operations: the token exchange for a local push, and an ACR build run
(the context uploaded to the registry's build-source URL, a DockerBuildRequest scheduled and
polled to the end).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import requests

from phi3_infra.azure.api_versions import ACR_BUILD_API_VERSION
from phi3_infra.azure.arm import ArmClient, ArmError, OperationFailed, Poll
from phi3_infra.azure.redaction import without_query
from phi3_infra.azure.waiting import poll_until_terminal
from phi3_infra.build_context import context_archive

ACR_RUN_SUCCEEDED = frozenset({"Succeeded"})
ACR_RUN_FAILED = frozenset({"Failed", "Canceled", "Error", "Timeout"})
BUILD_TIMEOUT_S = 3600
_UPLOAD_TIMEOUT_S = 300
RegistryToken = Callable[[str, str], str]


def exchange_acr_refresh_token(
    login_server: str, tenant_id: str, credential: Any = None, *, scheme: str = "https"
) -> str:
    """Trade an Entra ID access token for an ACR refresh token (POST /oauth2/exchange)."""
    from phi3_infra.azure.credentials import (
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
            "timeout": BUILD_TIMEOUT_S,
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
