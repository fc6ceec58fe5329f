"""The ARM client follows long-running operations as ARM's contract says (Azure/azure-resource-
manager-rpc v1.0/async-api-reference.md; MicrosoftDocs/azure-docs articles/azure-resource-manager/
management/async-operations.md): Azure-AsyncOperation before Location, Retry-After between looks,
a bounded wait, Azure's error on failure. The operation bodies are the documents' examples."""

from __future__ import annotations

import re
from typing import Any

import pytest

from phi3_infra.azure.arm import ArmClient, ArmError, OperationFailed, OperationTimedOut
from tests.fakes.arm_server import SUBSCRIPTION_ID, Answer, FakeArm
from tests.fakes.clock import fake_poll

API = "2021-04-01"
SUB = f"/subscriptions/{SUBSCRIPTION_ID}"
THING = f"{SUB}/providers/Microsoft.Test/things/t1"
STATUS = f"{SUB}/providers/Microsoft.Test/locations/westus/operations/op1"
RESULT = f"{SUB}/providers/Microsoft.Test/operationResults/op1"


def _serve(fake: FakeArm, method: str, path: str, *answers: Answer) -> None:
    """`path` answers `answers` in turn, the last one from then on."""
    pending = list(answers)

    def answer(fake: FakeArm, query: Any, match: re.Match[str], body: bytes = b"") -> Answer:
        return pending.pop(0) if len(pending) > 1 else pending[0]

    fake.route_with_body(method, re.escape(path), answer)


def _url(fake: FakeArm, path: str) -> str:
    return f"{fake.url}{path}?api-version={API}"


def test_an_azure_async_operation_is_polled_and_a_posts_result_read_from_location(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    headers = {
        "Azure-AsyncOperation": _url(fake_arm, STATUS),
        "Location": _url(fake_arm, RESULT),
        "Retry-After": "10",
    }
    _serve(fake_arm, "POST", f"{THING}/start", (202, None, headers))
    _serve(
        fake_arm,
        "GET",
        STATUS,
        (200, {"status": "InProgress", "name": "op1"}, {"Retry-After": "20"}),
        (200, {"status": "Succeeded", "name": "op1"}),
    )
    _serve(fake_arm, "GET", RESULT, (200, {"result": "done"}))
    poll, clock = fake_poll(interval_s=60)
    assert arm_client.post_and_wait(f"{THING}/start", API, poll, "starting t1") == {
        "result": "done"
    }
    # Each wait is the Retry-After of the answer before it.
    assert clock.sleeps == [10, 20]
    assert [c.path for c in fake_arm.calls] == [f"{THING}/start", STATUS, STATUS, RESULT]


def test_a_posts_result_without_location_is_read_from_resource_location(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    """Only Azure-AsyncOperation given: the result is at the status body's `resourceLocation`
    (azure-core OperationResourcePolling.get_final_get_url), else it is the status body."""
    headers = {"Azure-AsyncOperation": _url(fake_arm, STATUS)}
    _serve(fake_arm, "POST", f"{THING}/start", (202, None, headers))
    done = {"status": "Succeeded", "name": "op1", "resourceLocation": _url(fake_arm, RESULT)}
    _serve(fake_arm, "GET", STATUS, (200, done))
    _serve(fake_arm, "GET", RESULT, (200, {"result": "done"}))
    poll, _ = fake_poll(interval_s=1)
    assert arm_client.post_and_wait(f"{THING}/start", API, poll, "starting t1") == {
        "result": "done"
    }
    other_status = f"{STATUS}-2"
    _serve(
        fake_arm,
        "POST",
        f"{THING}/stop",
        (202, None, {"Azure-AsyncOperation": _url(fake_arm, other_status)}),
    )
    _serve(fake_arm, "GET", other_status, (200, {"status": "Succeeded", "name": "op2"}))
    assert arm_client.post_and_wait(f"{THING}/stop", API, poll, "stopping t1") == {
        "status": "Succeeded",
        "name": "op2",
    }


def test_a_failed_operation_raises_azures_error(fake_arm: FakeArm, arm_client: ArmClient) -> None:
    _serve(
        fake_arm,
        "POST",
        f"{THING}/start",
        (202, None, {"Azure-AsyncOperation": _url(fake_arm, STATUS)}),
    )
    error = {
        "code": "BadArgument",
        "message": "The provided database 'foo' has an invalid username.",
    }
    _serve(fake_arm, "GET", STATUS, (200, {"status": "Failed", "error": error}))
    with pytest.raises(OperationFailed) as caught:
        arm_client.post_and_wait(f"{THING}/start", API, fake_poll()[0], "starting t1")
    assert str(caught.value) == (
        "starting t1 Failed: BadArgument The provided database 'foo' has an invalid username."
    )


def test_a_location_answers_202_until_the_delete_is_done(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    location = {"Location": _url(fake_arm, RESULT), "Retry-After": "17"}
    _serve(fake_arm, "DELETE", THING, (202, None, location))
    _serve(fake_arm, "GET", RESULT, (202, None, location), (204, None))
    poll, clock = fake_poll(interval_s=60)
    assert arm_client.delete_and_wait(THING, API, poll, "deleting t1") == 202
    assert clock.sleeps == [17, 17]
    assert [c.status for c in fake_arm.calls_to(RESULT)] == [202, 204]


def test_throttling_while_polling_only_delays_the_next_look(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    _serve(fake_arm, "DELETE", THING, (202, None, {"Location": _url(fake_arm, RESULT)}))
    _serve(fake_arm, "GET", RESULT, (200, None))
    # More 429s than the client's own retries.
    fake_arm.fail(429, times=5, retry_after="0", path_contains="/operationResults/")
    assert arm_client.delete_and_wait(THING, API, fake_poll()[0], "deleting t1") == 202
    assert [c.status for c in fake_arm.calls_to(RESULT)] == [429, 429, 429, 429, 429, 200]


def test_an_operation_that_outlasts_the_wait_says_what_and_what_to_do(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    _serve(fake_arm, "DELETE", THING, (202, None, {"Azure-AsyncOperation": _url(fake_arm, STATUS)}))
    _serve(fake_arm, "GET", STATUS, (200, {"status": "Deleting"}))
    poll, clock = fake_poll(timeout_s=300, interval_s=60)
    with pytest.raises(OperationTimedOut) as caught:
        arm_client.delete_and_wait(THING, API, poll, "deleting t1", advice="Run it again.")
    assert str(caught.value) == (
        "deleting t1 still Deleting after 300 s; it keeps running in Azure. Run it again."
    )
    assert clock.now <= 300


def test_an_accepted_request_without_anything_to_follow_is_an_error(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    _serve(fake_arm, "POST", f"{THING}/start", (202, None))
    with pytest.raises(ArmError, match="starting t1: ARM accepted the request") as caught:
        arm_client.post_and_wait(f"{THING}/start", API, fake_poll()[0], "starting t1")
    assert caught.value.status == 202


def test_an_operation_url_on_another_host_is_refused(
    fake_arm: FakeArm, arm_client: ArmClient
) -> None:
    stolen = {"Azure-AsyncOperation": "https://attacker.example/operations/op1"}
    _serve(fake_arm, "POST", f"{THING}/start", (202, None, stolen))
    with pytest.raises(ArmError, match="refusing operation URL outside"):
        arm_client.post_and_wait(f"{THING}/start", API, fake_poll()[0], "starting t1")
