"""The project's own Azure calls sign in as azure-native does (phi3_infra/azure/credentials.py).

A CI set up the Pulumi way gives the service principal or the OIDC token through ARM_* only; a
developer may give AZURE_* instead. Each test signs in with azure-identity's real credentials
against a fake Entra ID (tests/fakes/entra.py) on the fake ARM server, which accepts only the
token that fake Entra issues: a call that reaches ARM proves the whole sign-in.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from phi3_infra.azure.arm import ArmAuthError, client_from_environment
from phi3_infra.azure.blob import storage_token
from phi3_infra.azure.credentials import credential_from_environment
from tests.fakes.arm_server import FakeArm
from tests.fakes.entra import CLIENT_ID, JWT_BEARER, TENANT_ID, FakeEntra, github_oidc

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "fake-client-secret-never-printed"
FEDERATED_TOKEN = "fake-federated-token-never-printed"
# Whatever the machine running the tests has set must not take part in the sign-in.
SIGN_IN_PREFIXES = ("ARM_", "AZURE_", "ACTIONS_ID_TOKEN_", "IDENTITY_", "MSI_", "IMDS_")

SERVICE_PRINCIPAL = {
    "ARM_*": {
        "ARM_CLIENT_ID": CLIENT_ID,
        "ARM_CLIENT_SECRET": SECRET,
        "ARM_TENANT_ID": TENANT_ID,
        "ARM_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000001",
    },
    # AZURE_* as azure-native reads them too: through DefaultAzureCredential, when asked.
    "AZURE_*": {
        "ARM_USE_DEFAULT_AZURE_CREDENTIAL": "true",
        "AZURE_CLIENT_ID": CLIENT_ID,
        "AZURE_CLIENT_SECRET": SECRET,
        "AZURE_TENANT_ID": TENANT_ID,
        "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000001",
    },
}


@pytest.fixture
def entra(fake_arm: FakeArm, monkeypatch: pytest.MonkeyPatch) -> FakeEntra:
    """An environment holding no sign-in settings but the cloud's: Entra ID and ARM are the
    fakes (a private cloud to azure-identity, so MSAL's instance discovery, which would ask
    login.microsoftonline.com about the host, is off)."""
    for name in list(os.environ):
        if name.startswith(SIGN_IN_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", fake_arm.url)
    monkeypatch.setenv("ARM_DISABLE_INSTANCE_DISCOVERY", "true")
    monkeypatch.setenv("AZURE_RESOURCE_MANAGER_ENDPOINT", fake_arm.url)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake_arm.ca_file))
    return FakeEntra(fake_arm, client_secret=SECRET, federated_token=FEDERATED_TOKEN).install()


def _set(monkeypatch: pytest.MonkeyPatch, values: dict[str, str]) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def _list_providers(fake_arm: FakeArm) -> list[str]:
    with client_from_environment() as client:
        path = f"/subscriptions/{fake_arm.subscription_id}/providers"
        return [item["namespace"] for item in client.list_json(path, "2021-04-01")]


@pytest.mark.parametrize("given", SERVICE_PRINCIPAL)
def test_a_service_principal_given_one_way_only_reaches_arm(
    given: str, entra: FakeEntra, fake_arm: FakeArm, monkeypatch: pytest.MonkeyPatch
) -> None:
    _set(monkeypatch, SERVICE_PRINCIPAL[given])
    assert "Microsoft.MachineLearningServices" in _list_providers(fake_arm)
    (request,) = entra.requests
    assert request.tenant == TENANT_ID
    assert request.form["client_id"] == CLIENT_ID
    assert request.form["scope"] == f"{fake_arm.url}/.default"


def test_an_oidc_token_given_as_arm_variables_reaches_arm(
    entra: FakeEntra, fake_arm: FakeArm, monkeypatch: pytest.MonkeyPatch
) -> None:
    _set(
        monkeypatch,
        {
            "ARM_USE_OIDC": "true",
            "ARM_CLIENT_ID": CLIENT_ID,
            "ARM_TENANT_ID": TENANT_ID,
            "ARM_OIDC_TOKEN": FEDERATED_TOKEN,
        },
    )
    assert _list_providers(fake_arm)
    (request,) = entra.requests
    assert request.form["client_assertion_type"] == JWT_BEARER
    assert "client_secret" not in request.form


def test_github_actions_oidc_reaches_arm_with_the_token_github_hands_out(
    entra: FakeEntra, fake_arm: FakeArm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ARM_USE_OIDC in a workflow with `id-token: write`: the token comes from GitHub's endpoint
    (ACTIONS_ID_TOKEN_REQUEST_URL and _TOKEN), for azure-native's default audience."""
    with github_oidc("fake-request-token", FEDERATED_TOKEN) as github:
        _set(
            monkeypatch,
            {
                "ARM_USE_OIDC": "true",
                "ARM_CLIENT_ID": CLIENT_ID,
                "ARM_TENANT_ID": TENANT_ID,
                "ACTIONS_ID_TOKEN_REQUEST_URL": github.url,
                "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "fake-request-token",
            },
        )
        assert _list_providers(fake_arm)
    assert github.audiences == ["api://AzureADTokenExchange"]
    assert entra.requests[0].form["client_assertion_type"] == JWT_BEARER


def test_the_data_upload_signs_in_the_same_way(
    entra: FakeEntra, fake_arm: FakeArm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dynamic provider's blob upload, run by the engine with the CI's ARM_* environment."""
    _set(monkeypatch, SERVICE_PRINCIPAL["ARM_*"])
    assert storage_token() == fake_arm.token
    assert entra.requests[0].form["scope"] == "https://storage.azure.com/.default"


def test_a_refused_secret_fails_with_entras_reason_and_never_shows_the_secret(
    entra: FakeEntra,
    fake_arm: FakeArm,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    entra.client_secret = "the-secret-entra-expects"
    _set(monkeypatch, SERVICE_PRINCIPAL["ARM_*"])
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ArmAuthError) as refused:
        _list_providers(fake_arm)
    assert "AADSTS7000215" in str(refused.value)
    assert SECRET not in str(refused.value)
    assert SECRET not in caplog.text
    assert not fake_arm.calls_to("/providers")


@pytest.mark.parametrize(
    ("settings", "missing"),
    [
        ({"ARM_CLIENT_SECRET": SECRET, "ARM_CLIENT_ID": CLIENT_ID}, "ARM_TENANT_ID"),
        ({"ARM_USE_OIDC": "true", "ARM_TENANT_ID": TENANT_ID}, "ARM_CLIENT_ID"),
        (
            {"ARM_USE_OIDC": "true", "ARM_TENANT_ID": TENANT_ID, "ARM_CLIENT_ID": CLIENT_ID},
            "ARM_OIDC_TOKEN",
        ),
    ],
)
def test_an_incomplete_setting_names_what_is_missing(
    settings: dict[str, str], missing: str, entra: FakeEntra, monkeypatch: pytest.MonkeyPatch
) -> None:
    _set(monkeypatch, settings)
    with pytest.raises(ArmAuthError, match=re.escape(missing)) as refused:
        client_from_environment()
    assert SECRET not in str(refused.value)
    assert not entra.requests


def _certificate(folder: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ci")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    path = folder / "ci.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    return path


@pytest.mark.parametrize(
    ("settings", "chosen"),
    [
        # azure-native's order (auth_azidentity.go newSingleMethodAuthCredential).
        ({"ARM_USE_DEFAULT_AZURE_CREDENTIAL": "true", "ARM_CLIENT_SECRET": SECRET}, "DefaultAzure"),
        ({"ARM_CLIENT_CERTIFICATE_PATH": "<pem>", "ARM_CLIENT_SECRET": SECRET}, "Certificate"),
        ({"ARM_CLIENT_SECRET": SECRET, "ARM_USE_OIDC": "true"}, "ClientSecret"),
        ({"ARM_USE_OIDC": "true", "ARM_OIDC_TOKEN": "t", "ARM_USE_MSI": "true"}, "ClientAssertion"),
        ({"ARM_USE_MSI": "true"}, "ManagedIdentity"),
        # Only the exact string "true" switches a method on, as in azure-native.
        ({"ARM_USE_MSI": "True"}, "AzureCli"),
        # Nothing set: the Azure CLI, as azure-native; AZURE_* alone are read by neither.
        ({}, "AzureCli"),
        ({"AZURE_CLIENT_ID": CLIENT_ID, "AZURE_CLIENT_SECRET": SECRET}, "AzureCli"),
    ],
)
def test_the_method_is_chosen_in_azure_natives_order(
    settings: dict[str, str], chosen: str, tmp_path: Path
) -> None:
    env = {"ARM_TENANT_ID": TENANT_ID, "ARM_CLIENT_ID": CLIENT_ID} | settings
    if env.get("ARM_CLIENT_CERTIFICATE_PATH") == "<pem>":
        env["ARM_CLIENT_CERTIFICATE_PATH"] = str(_certificate(tmp_path))
    credential = credential_from_environment(env)
    assert type(credential).__name__ == f"{chosen}Credential"


def test_arm_environment_picks_the_clouds_arm(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(SIGN_IN_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ARM_ENVIRONMENT", "usgovernment")
    with client_from_environment() as client:
        assert client.endpoint == "https://management.usgovcloudapi.net"


def test_no_other_module_builds_its_own_credential() -> None:
    """One place decides how the project signs in: a credential built elsewhere would ignore
    the ARM_* settings again."""
    sources = [
        *(REPO_ROOT / "infra" / "phi3_infra").rglob("*.py"),
        *(REPO_ROOT / "scripts").rglob("*.py"),
    ]
    builders = {
        path.relative_to(REPO_ROOT).as_posix()
        for path in sources
        if re.search(r"from azure\.identity import|azure\.identity\.", path.read_text())
    }
    assert builders == {"infra/phi3_infra/azure/credentials.py"}
