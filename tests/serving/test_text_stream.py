"""Stop strings and detokenization, streamed: same text as whole-text processing, and work per
token that does not grow with the answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from transformers import AutoTokenizer

from phi3_server.detokenizer import IncrementalDetokenizer
from phi3_server.routes.openai import _sse_chunks
from phi3_server.schemas import ChatCompletionChunk
from phi3_server.sequence import Finished, TextDelta
from phi3_server.stopping import StopMatcher


def _cut_at_earliest_stop(pieces: list[str], stops: list[str]) -> tuple[str, bool]:
    """The whole-text reference (as the server did before, re-decoding everything per token):
    after each piece, the text so far up to the earliest-starting stop string in it."""
    for count in range(1, len(pieces) + 1):
        text = "".join(pieces[:count])
        starts = [index for stop in stops if (index := text.find(stop)) >= 0]
        if starts:
            return text[: min(starts)], True
    return "".join(pieces), False


_alphabet = st.sampled_from("abc\u00e9")  # few letters, so stop strings do occur


@given(
    pieces=st.lists(st.text(_alphabet, max_size=5), max_size=12),
    stops=st.lists(st.text(_alphabet, min_size=1, max_size=4), max_size=3),
)
def test_streamed_stop_matching_equals_the_whole_text_reference(
    pieces: list[str], stops: list[str]
) -> None:
    matcher = StopMatcher(stops)
    emitted, stopped = "", False
    for piece in pieces:
        released, stopped = matcher.feed(piece)
        emitted += released
        # Only text that can no longer begin a stop string is out.
        assert not any(stop in emitted for stop in stops)
        if stopped:
            break
    if not stopped:
        emitted += matcher.flush()
    assert (emitted, stopped) == _cut_at_earliest_stop(pieces, stops)


class _CountingTokenizer:
    """The real tokenizer, recording how many tokens each decode call gets."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self.lengths: list[int] = []

    def decode(self, ids: list[int], **options: Any) -> str:
        self.lengths.append(len(ids))
        return str(self._tokenizer.decode(ids, **options))


@pytest.fixture(scope="module")
def tokenizer(tiny_phi3: Path) -> Any:
    return AutoTokenizer.from_pretrained(tiny_phi3)


@given(text=st.text(st.characters(codec="utf-8"), max_size=40))
def test_incremental_text_equals_decoding_the_whole_answer(tokenizer: Any, text: str) -> None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    detokenizer = IncrementalDetokenizer(tokenizer)
    streamed = "".join(detokenizer.add(token) for token in ids) + detokenizer.flush()
    assert streamed == tokenizer.decode(ids, skip_special_tokens=True)


def test_each_token_decodes_a_window_of_a_few_tokens_however_long_the_answer(
    tokenizer: Any,
) -> None:
    ids = tokenizer(" ".join(["the quick brown fox"] * 150), add_special_tokens=False)["input_ids"]
    assert len(ids) > 300
    counting = _CountingTokenizer(tokenizer)
    detokenizer = IncrementalDetokenizer(counting)
    for token in ids:
        detokenizer.add(token)
    assert max(counting.lengths) <= 4


def test_streamed_text_with_unicode_line_separators_survives_line_splitting() -> None:
    # httpx's aiter_lines and openai-python's SSEDecoder split the stream with str.splitlines,
    # which also breaks at U+0085, U+2028 and U+2029: a raw one would cut a chunk's JSON.
    text = "one\u2028two\x85three\u2029"

    async def events() -> AsyncGenerator[TextDelta | Finished]:
        yield TextDelta(text)
        yield Finished("stop", 1, 1)

    async def stream() -> str:
        template = ChatCompletionChunk(id="chatcmpl-1", created=0, model="phi3", choices=[])
        return "".join([chunk async for chunk in _sse_chunks(events(), template, False)])

    lines = [line for line in asyncio.run(stream()).splitlines() if line.startswith("data: {")]
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == text
