"""Validate chat-format JSON Lines before any model is loaded.

Standard library only: the Pulumi program (whose environment has no torch or transformers) calls
:func:`validate_chat_jsonl` to reject bad data before uploading it, and the trainer calls it before
loading the model. A tokenizer-backed token counter is passed in when the length check is wanted.

Each valid record is normalised to ``{"messages": [{"role": ..., "content": ...}, ...]}``; extra
columns (``prompt``, ``prompt_id``, ...) are dropped so they cannot be mistaken for other dataset
layouts downstream.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROLES = ("system", "user", "assistant")

Messages = list[dict[str, str]]
ChatRecord = dict[str, Messages]
# Number of tokens a conversation occupies once rendered with the chat template.
TokenCounter = Callable[[Messages], int]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one line of one file."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass
class ValidationReport:
    """The valid records of a file (with their line numbers) and every problem found in it."""

    records: list[ChatRecord] = field(default_factory=list)
    line_numbers: list[int] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    token_counts: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def extend(self, other: ValidationReport) -> None:
        self.records += other.records
        self.line_numbers += other.line_numbers
        self.problems += other.problems
        self.token_counts += other.token_counts


class InvalidDataError(ValueError):
    """Raised with every problem found, one ``file:line: what`` per line of the message."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(str(p) for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in the data:\n{lines}")


def message_problems(messages: Any) -> list[str]:
    """Everything wrong with one conversation's ``messages`` value, as readable phrases."""
    if not isinstance(messages, list):
        return [f"'messages' must be a list, got {type(messages).__name__}"]
    if not messages:
        return ["'messages' is empty"]
    problems: list[str] = []
    roles: list[str | None] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            problems.append(f"{where} must be an object, got {type(message).__name__}")
            roles.append(None)
            continue
        role = message.get("role")
        if role not in ROLES:
            problems.append(f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}")
            role = None
        roles.append(role)
        content = message.get("content")
        if not isinstance(content, str):
            problems.append(f"{where}.content must be a string, got {type(content).__name__}")
        elif not content.strip():
            problems.append(f"{where}.content is empty")
    problems += _order_problems(roles)
    return problems


def _order_problems(roles: list[str | None]) -> list[str]:
    problems = [
        f"messages[{i}] is a system message; only the first message may be one"
        for i, role in enumerate(roles)
        if role == "system" and i > 0
    ]
    turns = [(i, role) for i, role in enumerate(roles) if role != "system"]
    expected = "user"
    for i, role in turns:
        if role is not None and role != expected:
            problems.append(
                f"messages[{i}] is {role!r} but {expected!r} was expected (turns alternate)"
            )
        expected = "assistant" if expected == "user" else "user"
    if not turns:
        problems.append("no user or assistant message")
    elif turns[-1][1] not in ("assistant", None):
        problems.append("the last message must be the assistant's (it is what the model learns)")
    return problems


@dataclass(frozen=True)
class Unreadable:
    """A line that could not be read as a record; stands in for the record in problems."""

    reason: str


def validate_records(
    records: Iterable[tuple[int, Any]],
    source: str,
    *,
    count_tokens: TokenCounter | None = None,
    max_length: int | None = None,
) -> ValidationReport:
    """Check ``(line number, parsed record)`` pairs; ``source`` names the file in problems."""
    report = ValidationReport()
    for line_number, value in records:
        problems, record = _check_record(value)
        tokens = None
        if not problems and count_tokens is not None:
            tokens = count_tokens(record["messages"])
            if max_length is not None and tokens > max_length:
                problems = [f"example is {tokens} tokens, longer than max_length {max_length}"]
        if problems:
            report.problems += [Problem(source, line_number, p) for p in problems]
            continue
        report.records.append(record)
        report.line_numbers.append(line_number)
        if tokens is not None:
            report.token_counts.append(tokens)
    return report


def parse_json_line(line: str) -> Any:
    """The JSON value of one line, or :class:`Unreadable` saying why there is none."""
    if not line.strip():
        return Unreadable("blank line (each line must be one JSON object)")
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        return Unreadable(f"not valid JSON: {error.msg} at column {error.colno}")


def validate_lines(
    lines: Iterable[str],
    source: str,
    *,
    count_tokens: TokenCounter | None = None,
    max_length: int | None = None,
) -> ValidationReport:
    """Check JSON Lines text (one chat record per line); ``source`` names the file in problems."""
    parsed = ((n, parse_json_line(line)) for n, line in enumerate(lines, start=1))
    return validate_records(parsed, source, count_tokens=count_tokens, max_length=max_length)


def _check_record(value: Any) -> tuple[list[str], ChatRecord]:
    if isinstance(value, Unreadable):
        return [value.reason], {}
    if not isinstance(value, dict):
        return [f"each line must be a JSON object, got {type(value).__name__}"], {}
    if "messages" not in value:
        return [f"missing 'messages' (keys present: {', '.join(sorted(value)) or 'none'})"], {}
    problems = message_problems(value["messages"])
    if problems:
        return problems, {}
    messages = [{"role": m["role"], "content": m["content"]} for m in value["messages"]]
    return [], {"messages": messages}


def validate_chat_jsonl(
    path: str | Path,
    *,
    count_tokens: TokenCounter | None = None,
    max_length: int | None = None,
) -> ValidationReport:
    """Validate a chat JSONL file: all problems as ``file:line: what``, plus the valid records."""
    path = Path(path)
    if not path.is_file():
        return ValidationReport(problems=[Problem(str(path), 0, "file not found")])
    try:
        with path.open(encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except UnicodeDecodeError as error:
        return ValidationReport(problems=[Problem(str(path), 0, f"not UTF-8 text: {error.reason}")])
    return validate_lines(lines, str(path), count_tokens=count_tokens, max_length=max_length)


def split_records(
    records: Sequence[ChatRecord], fraction: float, seed: int
) -> tuple[list[ChatRecord], list[ChatRecord]]:
    """Seeded shuffle, then the first ``fraction`` (at least one record) becomes validation."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be between 0 and 1, got {fraction}")
    if len(records) < 2:
        raise ValueError(
            f"need at least 2 records to split off a validation set, got {len(records)}"
        )
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    size = max(1, round(len(records) * fraction))
    return [records[i] for i in order[size:]], [records[i] for i in order[:size]]


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
