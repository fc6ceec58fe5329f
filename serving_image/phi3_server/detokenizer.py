"""Incremental detokenization: each new token costs a decode of a few tokens, not of the answer.

TGI's ``decode_token`` (huggingface/text-generation-inference
server/text_generation_server/models/model.py): decode a window from ``prefix_offset`` with and
without the tokens after ``read_offset``; the difference is the new text. The prefix gives the
tokenizer the context its clean-up rules need (spaces between words), and text ending in U+FFFD
(a UTF-8 character split across byte tokens) waits for the next token.
"""

from __future__ import annotations

from typing import Any


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self.tokens: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def add(self, token: int) -> str:
        """Record ``token``; the text it completes (often all of it, sometimes none yet)."""
        self.tokens.append(token)
        prefix_text, new_text = self._window()
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self._prefix_offset, self._read_offset = self._read_offset, len(self.tokens)
            return new_text[len(prefix_text) :]
        return ""

    def flush(self) -> str:
        """Whatever the held-back tokens decode to, partial characters included."""
        prefix_text, new_text = self._window()
        self._prefix_offset = self._read_offset = len(self.tokens)
        return new_text[len(prefix_text) :]

    def _window(self) -> tuple[str, str]:
        window = self.tokens[self._prefix_offset :]
        prefix = self.tokens[self._prefix_offset : self._read_offset]
        decode = self._tokenizer.decode
        return decode(prefix, skip_special_tokens=True), decode(window, skip_special_tokens=True)
