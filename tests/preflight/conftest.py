"""Fixtures for the preflight tests: a fake ARM server over HTTPS and a client pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from phi3_infra.arm import ArmClient
from tests.fakes.arm_server import FakeArm, FixedToken


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
