"""Stop strings in streamed text, found with work proportional to the new text only.

Each stop string has a Knuth-Morris-Pratt automaton whose state is the longest prefix of the
stop string that the text ends with; feeding a delta advances it character by character. Text
that may still begin a stop string is held back until the next delta decides it.
"""

from __future__ import annotations

from collections.abc import Sequence


def _failure_table(pattern: str) -> list[int]:
    """``table[i]``: length of the longest proper prefix of ``pattern[: i + 1]`` that is also
    its suffix (the KMP failure function)."""
    table = [0] * len(pattern)
    matched = 0
    for index in range(1, len(pattern)):
        while matched and pattern[index] != pattern[matched]:
            matched = table[matched - 1]
        if pattern[index] == pattern[matched]:
            matched += 1
        table[index] = matched
    return table


class StopMatcher:
    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = list(stops)
        self._tables = [_failure_table(stop) for stop in self._stops]
        self._matched = [0] * len(self._stops)
        self._pending = ""  # received, not yet released: at most the longest partial match

    def feed(self, text: str) -> tuple[str, bool]:
        """Text now safe to emit, and whether a stop string completed (the text then ends
        right before the earliest-starting one, and the matcher is spent)."""
        base = len(self._pending)
        self._pending += text
        earliest: int | None = None
        for index, (stop, table) in enumerate(zip(self._stops, self._tables, strict=True)):
            matched = self._matched[index]
            for offset, char in enumerate(text):
                while matched and stop[matched] != char:
                    matched = table[matched - 1]
                if stop[matched] == char:
                    matched += 1
                if matched == len(stop):
                    start = base + offset + 1 - len(stop)
                    earliest = start if earliest is None else min(earliest, start)
                    break
            self._matched[index] = matched
        if earliest is not None:
            released, self._pending = self._pending[:earliest], ""
            return released, True
        cut = len(self._pending) - max(self._matched, default=0)
        released, self._pending = self._pending[:cut], self._pending[cut:]
        return released, False

    def flush(self) -> str:
        """The held-back text, when no more text will come."""
        released, self._pending = self._pending, ""
        return released
