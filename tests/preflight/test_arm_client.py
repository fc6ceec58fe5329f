"""The ARM client against the fake server: paging, retries, Retry-After, timeouts, typed errors."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from phi3_infra.azure.arm import (
    ArmAuthError,
    ArmClient,
    ArmError,
    ArmNotFoundError,
    ArmThrottledError,
    ArmUnavailableError,
)
from tests.fakes.arm_server import SUBSCRIPTION_ID, ExpiringTokens, FakeArm, FixedToken
from tests.fakes.clock import FakeClock

PROVIDERS = f"/subscriptions/{SUBSCRIPTION_ID}/providers"
API = "2021-04-01"


def test_list_follows_next_link_across_pages(fake_arm: FakeArm, arm_client: ArmClient) -> None:
    fake_arm.page_size = 2
    namespaces = [p["namespace"] for p in arm_client.list_json(PROVIDERS, API)]
    assert namespaces == list(fake_arm.providers)
    assert len(fake_arm.calls_to("/providers")) == 5  # 9 providers, 2 per page


def test_throttled_call_waits_for_retry_after_then_succeeds(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    fake_arm.fail(429, times=1, retry_after="1")
    started = time.perf_counter()
    assert list(arm_client.list_json(PROVIDERS, API))
    # The backoff is 0.05 s, so a wait of a second can only come from Retry-After.
    assert time.perf_counter() - started >= 1.0
    assert [call.status for call in fake_arm.calls] == [429, 200]


def test_throttling_that_never_ends_is_a_throttled_error(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    fake_arm.fail(429)
    with pytest.raises(ArmThrottledError, match="429"):
        arm_client.get_json(PROVIDERS, API)
    assert len(fake_arm.calls) == 4  # the first try and three retries


def test_server_errors_retry_until_the_deadline_then_fail(
    fake_arm: FakeArm, credential: FixedToken
) -> None:
    fake_arm.fail(500)
    client = fake_arm.client(credential, retry_total=50, retry_backoff_s=0.2, deadline_s=1.5)
    started = time.perf_counter()
    with client, pytest.raises(ArmUnavailableError):
        client.get_json(PROVIDERS, API)
    elapsed = time.perf_counter() - started
    assert 1.0 <= elapsed < 4.0, elapsed
    assert 2 <= len(fake_arm.calls) < 50


def test_slow_answer_hits_the_per_call_timeout(fake_arm: FakeArm, credential: FixedToken) -> None:
    fake_arm.latency_s = 2.0
    client = fake_arm.client(credential, timeout_s=0.3, retry_total=0)
    started = time.perf_counter()
    with client, pytest.raises(ArmUnavailableError, match="GET /subscriptions"):
        client.get_json(PROVIDERS, API)
    assert time.perf_counter() - started < 1.5


def test_a_refused_token_is_replaced_once_then_an_auth_error(fake_arm: FakeArm) -> None:
    """A 401 gets one fresh sign-in (arm.py); a credential that keeps handing out a token ARM
    refuses gets no third try."""
    credential = FixedToken("revoked-token")
    client = fake_arm.client(credential)
    with client, pytest.raises(ArmAuthError, match="InvalidAuthenticationToken") as caught:
        client.get_json(PROVIDERS, API)
    assert caught.value.status == 401
    assert [call.status for call in fake_arm.calls] == [401, 401]
    assert credential.requests == 2


def test_an_expired_token_is_replaced_and_the_call_succeeds(fake_arm: FakeArm) -> None:
    clock = FakeClock()
    fake_arm.clock = clock
    credential = ExpiringTokens(fake_arm, lifetime_s=3600)
    with fake_arm.client(credential) as client:
        assert client.get_json(PROVIDERS, API)["value"]
        clock.sleep(3600)  # the token's hour is over on ARM's clock, not on the client's
        assert client.get_json(PROVIDERS, API)["value"]
    assert [call.status for call in fake_arm.calls] == [200, 401, 200]
    assert credential.requests == 2


def test_a_missing_role_is_not_retried_with_a_new_token(
    fake_arm: FakeArm, credential: FixedToken
) -> None:
    fake_arm.fail(403, times=1)
    with fake_arm.client(credential) as client, pytest.raises(ArmAuthError) as caught:
        client.get_json(PROVIDERS, API)
    assert caught.value.status == 403
    assert len(fake_arm.calls) == 1 and credential.requests == 1


def test_credential_failure_is_an_auth_error(fake_arm: FakeArm) -> None:
    from azure.core.exceptions import ClientAuthenticationError

    class NotSignedIn(FixedToken):
        def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            raise ClientAuthenticationError("Please run 'az login' to set up an account")

    client = fake_arm.client(NotSignedIn())
    with client, pytest.raises(ArmAuthError, match="az login"):
        client.authenticate()
    assert fake_arm.calls == []


def test_not_found_and_bad_api_version_are_told_apart(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    with pytest.raises(ArmNotFoundError, match="SubscriptionNotFound"):
        arm_client.get_json("/subscriptions/00000000-0000-0000-0000-00000000dead/providers", API)
    with pytest.raises(ArmError, match="InvalidApiVersionParameter") as caught:
        arm_client.get_json(PROVIDERS, "1999-01-01")
    assert type(caught.value) is ArmError and caught.value.status == 400


def test_tls_is_verified(fake_arm: FakeArm, credential: FixedToken) -> None:
    # Without the fake's CA the certificate is not trusted: the token is never sent.
    client = ArmClient(credential, endpoint=fake_arm.url, retry_total=0)
    with client, pytest.raises(ArmUnavailableError, match=r"(?i)certificate"):
        client.get_json(PROVIDERS, API)
    assert fake_arm.calls == []


def test_next_link_to_another_host_is_refused(fake_arm: FakeArm, arm_client: ArmClient) -> None:
    def leaking_page(fake: FakeArm, query: Any, match: re.Match[str]) -> tuple[int, Any]:
        return 200, {"value": [{"n": 1}], "nextLink": "https://attacker.example/steal?x=1"}

    fake_arm.route("GET", r"/subscriptions/[^/]+/providers/Microsoft\.Test/things", leaking_page)
    items = arm_client.list_json(f"{PROVIDERS}/Microsoft.Test/things", API)
    assert next(items) == {"n": 1}
    with pytest.raises(ArmError, match="refusing nextLink"):
        next(items)


def test_delete_returns_the_status(fake_arm: FakeArm, arm_client: ArmClient) -> None:
    seen: list[dict[str, list[str]]] = []

    def accept_delete(fake: FakeArm, query: Any, match: re.Match[str]) -> tuple[int, Any]:
        seen.append(query)
        return 202, None

    fake_arm.route(
        "DELETE", r"/subscriptions/[^/]+/providers/Microsoft\.Test/things/\w+", accept_delete
    )
    path = f"{PROVIDERS}/Microsoft.Test/things/old"
    assert arm_client.delete(path, API, {"forceToPurge": "true"}) == 202
    assert seen == [{"api-version": [API], "forceToPurge": ["true"]}]
