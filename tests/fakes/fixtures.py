"""Fixtures for every test that talks to Azure Resource Manager: the fake ARM server over HTTPS,
a client pointed at it, and the signed-in environment a CLI or `pulumi up` would see."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from phi3_infra.azure.arm import ArmClient
from tests.fakes.arm_server import TOKEN, FakeArm, FixedToken
from tests.fakes.azure_cli import install_fake_az


@pytest.fixture
def fake_arm(tmp_path: Path) -> Iterator[FakeArm]:
    fake = FakeArm()
    with fake.serving(tmp_path / "tls"):
        yield fake


@pytest.fixture
def credential() -> FixedToken:
    return FixedToken()


@pytest.fixture
def arm_client(fake_arm: FakeArm, credential: FixedToken) -> Iterator[ArmClient]:
    # Short backoff and deadline keep the retry tests to about a second.
    with fake_arm.client(
        credential,
        timeout_s=5,
        deadline_s=3,
        retry_total=3,
        retry_backoff_s=0.05,
    ) as client:
        yield client


@pytest.fixture
def signed_in_env(fake_arm: FakeArm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeArm:
    """The environment `pulumi up` or a CLI would see after `az login`, aimed at the fake ARM."""
    bin_dir = install_fake_az(tmp_path / "bin").parent
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    # No ARM_* sign-in setting of the machine, which phi3_infra/azure/credentials.py would prefer to
    # the (fake) Azure CLI.
    for name in [name for name in os.environ if name.startswith("ARM_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("FAKE_AZ_TOKEN", TOKEN)
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", fake_arm.subscription_id)
    monkeypatch.setenv("AZURE_RESOURCE_MANAGER_ENDPOINT", fake_arm.url)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake_arm.ca_file))
    return fake_arm
