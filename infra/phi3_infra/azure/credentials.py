"""One sign-in for every Azure call the project makes itself, from the settings azure-native reads.

azure-native signs in from `azure-native:*` config, else ARM_* environment variables
(pulumi/pulumi-azure-native provider/pkg/provider/auth_azidentity.go `readAuthConfig` and
`newSingleMethodAuthCredential`; provider.go `getConfig`). azure-identity's
DefaultAzureCredential reads AZURE_* instead (azure/identity/_constants.py). So that a CI set up
the Pulumi way, with ARM_* only, also signs in the project's own calls (preflight, registry build
and token exchange, data upload, job wait, endpoint traffic, purges, the scripts), this module
maps the same ARM_* settings, in azure-native's order, to the matching azure-identity credential,
and falls back where azure-native falls back, to the Azure CLI: both must sign in as one identity,
since the deployer's roles (data upload, AcrPush) go to the principal azure-native reports.
AZURE_* variables alone are not read, as azure-native does not read them; with
ARM_USE_DEFAULT_AZURE_CREDENTIAL=true both use azure-identity's DefaultAzureCredential, which does:

    ARM_USE_DEFAULT_AZURE_CREDENTIAL=true   DefaultAzureCredential
    ARM_CLIENT_CERTIFICATE_PATH             CertificateCredential (ARM_CLIENT_CERTIFICATE_PASSWORD)
    ARM_CLIENT_SECRET                       ClientSecretCredential
    ARM_USE_OIDC=true                       ClientAssertionCredential with ARM_OIDC_TOKEN, the file
                                            ARM_OIDC_TOKEN_FILE_PATH, or the token GitHub Actions
                                            hands out (ACTIONS_ID_TOKEN_REQUEST_URL and _TOKEN)
    ARM_USE_MSI=true                        ManagedIdentityCredential (ARM_CLIENT_ID: user-assigned)
    none of these                           AzureCliCredential (`az login`), as azure-native

Service principals also take ARM_TENANT_ID and ARM_CLIENT_ID. ARM_ENVIRONMENT (else
AZURE_ENVIRONMENT) picks the cloud as azure-native does; ARM_DISABLE_INSTANCE_DISCOVERY=true
turns off MSAL's check that the authority host is known to Microsoft (private clouds). Only the
environment is read: these calls also run in the engine's dynamic-provider process, outside the
program, so credentials kept in `azure-native:*` stack config reach azure-native only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from azure.core.credentials import TokenCredential
from azure.core.exceptions import ClientAuthenticationError

# azure-native switches a method on only for this exact string (`== "true"`).
TRUE = "true"
# The audience azure-native asks GitHub for by default (getOidcTokenExchangeAssertion).
GITHUB_OIDC_AUDIENCE = "api://AzureADTokenExchange"


class CredentialSettingsError(ValueError):
    """The ARM_* settings name a sign-in method but leave out what it needs."""


@dataclass(frozen=True)
class Cloud:
    authority_host: str  # Microsoft Entra ID
    resource_manager: str  # ARM base URL


# Hosts as in azure-identity's AzureAuthorityHosts; ARM URLs from Learn's developer guides for
# Azure Government and Azure operated by 21Vianet (management.usgovcloudapi.net, .chinacloudapi.cn).
AZURE_PUBLIC = Cloud("login.microsoftonline.com", "https://management.azure.com")
AZURE_GOVERNMENT = Cloud("login.microsoftonline.us", "https://management.usgovcloudapi.net")
AZURE_CHINA = Cloud("login.chinacloudapi.cn", "https://management.chinacloudapi.cn")
# azure-native's names (provider/pkg/azure/azure.go `GetCloudByName`); any other is public.
_CLOUD_NAMES = {
    "china": AZURE_CHINA,
    "azurechinacloud": AZURE_CHINA,
    "usgov": AZURE_GOVERNMENT,
    "usgovernment": AZURE_GOVERNMENT,
    "azureusgovernment": AZURE_GOVERNMENT,
    "azureusgovernmentcloud": AZURE_GOVERNMENT,
}


def cloud_from_environment(env: Mapping[str, str] | None = None) -> Cloud | None:
    """The cloud ARM_ENVIRONMENT (else AZURE_ENVIRONMENT) names; None when neither is set, so
    azure-identity's own AZURE_AUTHORITY_HOST applies."""
    env = os.environ if env is None else env
    name = env.get("ARM_ENVIRONMENT") or env.get("AZURE_ENVIRONMENT")
    if not name:
        return None
    return _CLOUD_NAMES.get(name.lower(), AZURE_PUBLIC)


def credential_from_environment(env: Mapping[str, str] | None = None) -> TokenCredential:
    """The credential azure-native would use, as an azure-identity credential (see above)."""
    from azure.identity import (
        AzureCliCredential,
        CertificateCredential,
        ClientAssertionCredential,
        ClientSecretCredential,
        DefaultAzureCredential,
        ManagedIdentityCredential,
    )

    env = os.environ if env is None else env
    cloud = cloud_from_environment(env)
    authority: dict[str, Any] = {"authority": cloud.authority_host} if cloud else {}
    msal = dict(authority)
    if env.get("ARM_DISABLE_INSTANCE_DISCOVERY") == TRUE:
        msal["disable_instance_discovery"] = True

    if env.get("ARM_USE_DEFAULT_AZURE_CREDENTIAL") == TRUE:
        return DefaultAzureCredential(**msal)
    if certificate := env.get("ARM_CLIENT_CERTIFICATE_PATH"):
        tenant, client = _service_principal(env, "ARM_CLIENT_CERTIFICATE_PATH")
        password = env.get("ARM_CLIENT_CERTIFICATE_PASSWORD") or None
        return CertificateCredential(
            tenant, client, certificate_path=certificate, password=password, **msal
        )
    if secret := env.get("ARM_CLIENT_SECRET"):
        tenant, client = _service_principal(env, "ARM_CLIENT_SECRET")
        return ClientSecretCredential(tenant, client, secret, **msal)
    if env.get("ARM_USE_OIDC") == TRUE:
        tenant, client = _service_principal(env, "ARM_USE_OIDC")
        return ClientAssertionCredential(tenant, client, _oidc_assertion(env), **authority)
    if env.get("ARM_USE_MSI") == TRUE:
        return ManagedIdentityCredential(client_id=env.get("ARM_CLIENT_ID") or None)
    # auth_azidentity.go newSingleMethodAuthCredential: "otherwise, use the Azure CLI".
    return AzureCliCredential()


def _service_principal(env: Mapping[str, str], method: str) -> tuple[str, str]:
    missing = [name for name in ("ARM_TENANT_ID", "ARM_CLIENT_ID") if not env.get(name)]
    if missing:
        raise CredentialSettingsError(
            f"{method} is set, so the service principal also needs {' and '.join(missing)} "
            "(its tenant id and application (client) id), as azure-native requires: set them, "
            f"or unset {method} to sign in another way"
        )
    return env["ARM_TENANT_ID"], env["ARM_CLIENT_ID"]


def _oidc_assertion(env: Mapping[str, str]) -> Callable[[], str]:
    """Where the federated token comes from, in azure-native's order (`newOidcCredential`)."""
    if token := env.get("ARM_OIDC_TOKEN"):
        return lambda: token
    if token_file := env.get("ARM_OIDC_TOKEN_FILE_PATH"):
        # Read on every sign-in: a platform may rotate the file.
        return lambda: Path(token_file).read_text().strip()
    url, bearer = env.get("ACTIONS_ID_TOKEN_REQUEST_URL"), env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
    if url and bearer:
        audience = env.get("ARM_OIDC_AUDIENCE") or GITHUB_OIDC_AUDIENCE
        return partial(github_id_token, url, bearer, audience)
    raise CredentialSettingsError(
        "ARM_USE_OIDC is true but no token is given: set ARM_OIDC_TOKEN or "
        "ARM_OIDC_TOKEN_FILE_PATH, or run in GitHub Actions with `permissions: id-token: write` "
        "(which sets ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN)"
    )


def github_id_token(url: str, bearer: str, audience: str) -> str:
    """A GitHub Actions OIDC token: GET the request URL with `audience`, the request token as
    bearer; the JSON answer's `value` is the token (GitHub docs "About security hardening with
    OpenID Connect"; azure-native `getOidcTokenExchangeAssertion` does the same)."""
    try:
        response = requests.get(
            url,
            params={"audience": audience},
            headers={"Authorization": f"Bearer {bearer}", "Accept": "application/json"},
            timeout=30,
        )
    except requests.RequestException as exc:
        raise ClientAuthenticationError(
            f"GitHub's OIDC token request to {urlsplit(url).netloc} failed: {type(exc).__name__}"
        ) from None
    if response.status_code != 200:
        raise ClientAuthenticationError(
            f"GitHub's OIDC token request to {urlsplit(url).netloc} answered "
            f"{response.status_code}: does the workflow have `permissions: id-token: write`?"
        )
    return str(response.json()["value"])
