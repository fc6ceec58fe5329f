"""The request timeout caps generation as max_tokens does: the text so far, "length"."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.serving.server_process import RunningServer, serve

pytestmark = pytest.mark.slow

TIMEOUT_S = 2.0
QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Tell me a long story."}]
# Far more tokens than the tiny model generates in TIMEOUT_S on a CPU.
TOO_MANY_TOKENS = 4000


@pytest.fixture(scope="module")
def impatient(tiny_phi3: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with serve(
        tmp_path_factory.mktemp("impatient"),
        "--model-dir",
        str(tiny_phi3),
        "--request-timeout",
        str(TIMEOUT_S),
    ) as running:
        yield running


def test_answer_cut_by_the_timeout_is_returned_with_length(impatient: RunningServer) -> None:
    started = time.monotonic()
    completion = impatient.openai().chat.completions.create(
        model="phi3",
        messages=QUESTION,
        max_tokens=TOO_MANY_TOKENS,
        extra_body={"ignore_eos": True},
    )
    assert time.monotonic() - started < TIMEOUT_S + 3
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert 0 < completion.usage.completion_tokens < TOO_MANY_TOKENS
    assert completion.choices[0].message.content


def test_streamed_answer_cut_by_the_timeout_ends_with_length(impatient: RunningServer) -> None:
    stream = impatient.openai().chat.completions.create(
        model="phi3",
        messages=QUESTION,
        max_tokens=TOO_MANY_TOKENS,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    usage = chunks[-1].usage
    assert usage is not None and 0 < usage.completion_tokens < TOO_MANY_TOKENS
