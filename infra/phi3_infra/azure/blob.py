"""Blob data-plane operations with an Entra ID token: the storage accounts have shared keys
disabled, and azure-native's `storage.Blob` needs them (pulumi/pulumi-azure-native#2015:
KeyBasedAuthenticationNotPermitted).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import requests

from phi3_infra.azure.api_versions import BLOB_API_VERSION
from phi3_infra.azure.redaction import without_query

STORAGE_SCOPE = "https://storage.azure.com/.default"

# A fresh role assignment for the deploying identity takes minutes to reach the data plane.
_RBAC_PROPAGATION_S = 600
_RETRY_INTERVAL_S = 15


def upload_blob(
    blob_url: str,
    data: bytes,
    token: Callable[[], str],
    *,
    patience_s: float = _RBAC_PROPAGATION_S,
    interval_s: float = _RETRY_INTERVAL_S,
) -> None:
    """PUT one block blob with a bearer token; 403 is retried while a new role propagates."""
    deadline = time.monotonic() + patience_s
    while True:
        response = requests.put(
            blob_url,
            data=data,
            headers={
                "Authorization": f"Bearer {token()}",
                "x-ms-version": BLOB_API_VERSION,
                "x-ms-blob-type": "BlockBlob",
                "Content-Type": "application/jsonl",
            },
            timeout=300,
        )
        if response.status_code in (200, 201):
            return
        if response.status_code != 403 or time.monotonic() + interval_s > deadline:
            raise RuntimeError(
                f"upload to {without_query(blob_url)} failed ({response.status_code}): "
                f"{response.text[:300]}"
            )
        time.sleep(interval_s)


def storage_token() -> str:
    # Signed in like every other call of the project (ARM_* as azure-native, else AZURE_*).
    from phi3_infra.azure.credentials import credential_from_environment

    return str(credential_from_environment().get_token(STORAGE_SCOPE).token)
