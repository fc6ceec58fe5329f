"""Admission limit (429 + Retry-After) and the optional API key, on one guarded server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.serving.server_process import RunningServer, serve

pytestmark = pytest.mark.slow

API_KEY = "test-key-0b7e"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Tell me a long story."}]


@pytest.fixture(scope="module")
def guarded(tiny_phi3: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Admits one request at a time and requires a key (given by environment, not flag)."""
    with serve(
        tmp_path_factory.mktemp("guarded"),
        "--model-dir",
        str(tiny_phi3),
        "--max-concurrent-requests",
        "1",
        "--max-batch-size",
        "1",
        env={"PHI3_SERVER_API_KEY": API_KEY},
    ) as running:
        yield running


def _short_request(server: RunningServer) -> httpx.Response:
    body = {"model": "phi3", "messages": QUESTION, "max_tokens": 2}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=AUTH, timeout=30)


def test_full_queue_gives_429_then_frees_the_slot_when_the_client_leaves(
    guarded: RunningServer,
) -> None:
    long_body = {
        "model": "phi3",
        "messages": QUESTION,
        "max_tokens": 3000,
        "stream": True,
        "ignore_eos": True,
    }
    url = f"{guarded.url}/v1/chat/completions"
    with httpx.stream("POST", url, json=long_body, headers=AUTH, timeout=30) as long_stream:
        lines = long_stream.iter_lines()
        assert next(lines).startswith("data: ")  # admitted and generating

        refused = _short_request(guarded)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "too_many_requests"
        with pytest.raises(openai.RateLimitError):
            guarded.openai(API_KEY).chat.completions.create(model="phi3", messages=QUESTION)

    _assert_slot_frees_soon(guarded)


def test_client_giving_up_on_a_plain_request_frees_the_slot(guarded: RunningServer) -> None:
    long_body = {"model": "phi3", "messages": QUESTION, "max_tokens": 3000, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{guarded.url}/v1/chat/completions", json=long_body, headers=AUTH, timeout=1.0)
    _assert_slot_frees_soon(guarded)


def _assert_slot_frees_soon(server: RunningServer) -> None:
    # 3000 tokens take far longer than this: the hang-up must have cancelled the generation.
    deadline = time.monotonic() + 5
    while (status := _short_request(server).status_code) == 429 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status == 200


def test_api_key_is_required_when_set(guarded: RunningServer) -> None:
    body = {"model": "phi3", "messages": QUESTION, "max_tokens": 2}
    url = f"{guarded.url}/v1/chat/completions"
    missing = httpx.post(url, json=body)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        guarded.openai("wrong-key").chat.completions.create(model="phi3", messages=QUESTION)
    for path in ("/v1/models", "/metrics"):
        assert httpx.get(f"{guarded.url}{path}").status_code == 401
    answer = guarded.openai(API_KEY).chat.completions.create(
        model="phi3", messages=QUESTION, max_tokens=2
    )
    assert answer.choices[0].finish_reason in ("stop", "length")
    # Azure's probes carry no key.
    assert httpx.get(f"{guarded.url}/health").status_code == 200
    assert httpx.get(f"{guarded.url}/ready").status_code == 200
    assert API_KEY not in guarded.log()
