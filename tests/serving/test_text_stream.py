"""Stop strings and detokenization, streamed: same text as whole-text processing, and work per
token that does not grow with the answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from transformers import AutoTokenizer

from phi3_server.detokenizer import IncrementalDetokenizer
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
