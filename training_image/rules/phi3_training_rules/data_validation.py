"""Validate chat-format JSON Lines before any model is loaded.

Standard library only: the Pulumi program (whose environment has no torch or transformers) calls
:func:`validate_chat_jsonl` to reject bad data before uploading it, and the trainer calls it before
loading the model. A tokenizer-backed encoder is passed in when the length check is wanted; the
trainer keeps what it returns and trains on it, so each conversation is tokenized once.

Each valid record is normalised to ``{"messages": [{"role": ..., "content": ...}, ...]}``; extra
columns (``prompt``, ``prompt_id``, ...) are dropped so they cannot be mistaken for other dataset
layouts downstream. OpenAI-style content, a list of ``{"type": "text", "text": ...}`` parts,
becomes its texts joined without a separator, as the server joins them for the chat template
(serving_image/phi3_server/schemas.py, ``ChatMessage.as_template_input``), so that training sees
what serving will. Other part types (images, audio, files) are refused: a text model cannot
learn from them.

Data must not forge the conversation's structure. A message whose text holds one of the
tokenizer's special tokens (``<|end|>``, ``<|user|>``, ...) is refused: the tokenizer would read
that text as the token itself (added tokens are split out of the raw text before anything else,
huggingface/tokenizers ``added_vocabulary.rs``, ``extract_and_normalize``), so a reply could end a
turn and start a forged one. Refused rather than escaped: no escaping is invisible to the model
(it would learn the escape), and the server's tokenizer would not escape a user's text the same
way. The special tokens come from the tokenizer (:mod:`phi3_trainer.tokenization`); without one
(the Pulumi program's plan-time check) that check, like the length check, is skipped.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

ROLES = ("system", "user", "assistant")

Messages = list[dict[str, str]]
ChatRecord = dict[str, Messages]
# A conversation's tokens as training sees them, rendered with the chat template: "input_ids",
# plus per-token columns such as "assistant_masks". Raises ValueError, with the reason, for a
# conversation that cannot be trained on (the template cannot render it, no reply is marked).
Encoding = dict[str, list[int]]
ChatEncoder = Callable[[Messages], Encoding]
Example = TypeVar("Example")
# The special tokens the tokenizer would read in a text (none: an empty list).
SpecialTokenFinder = Callable[[str], list[str]]
# UTF-16 surrogates: JSON may escape them (\ud800), but alone they are no character at all, and
# the tokenizer cannot encode a string that holds one.
_SURROGATES = re.compile(r"[\ud800-\udfff]")


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
    """The valid records of a file (with their line numbers) and every problem found in it;
    with an encoder, each valid record's encoding too (same order)."""

    records: list[ChatRecord] = field(default_factory=list)
    line_numbers: list[int] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    encodings: list[Encoding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def token_counts(self) -> list[int]:
        return [len(encoding["input_ids"]) for encoding in self.encodings]

    def extend(self, other: ValidationReport) -> None:
        self.records += other.records
        self.line_numbers += other.line_numbers
        self.problems += other.problems
        self.encodings += other.encodings


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
        text, content_problems = content_text(message.get("content"), f"{where}.content")
        problems += content_problems
        if text is not None and (surrogate := _SURROGATES.search(text)):
            problems.append(
                f"{where}.content has invalid Unicode: a lone surrogate "
                f"U+{ord(surrogate.group()):04X} at character {surrogate.start()} (an escape "
                "\\ud800-\\udfff must be half of a pair that makes one character)"
            )
    problems += _order_problems(roles)
    return problems


def content_text(content: Any, where: str) -> tuple[str | None, list[str]]:
    """A message's text: a string, or the texts of a list of OpenAI-style text parts joined."""
    if isinstance(content, list):
        return _parts_text(content, where)
    if not isinstance(content, str):
        what = type(content).__name__
        return None, [f"{where} must be a string or a list of text parts, got {what}"]
    if not content.strip():
        return None, [f"{where} is empty"]
    return content, []


def _parts_text(parts: list[Any], where: str) -> tuple[str | None, list[str]]:
    problems, texts = [], []
    for index, part in enumerate(parts):
        here = f"{where}[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(part, dict):
            problems.append(f"{here} must be an object, got {type(part).__name__}")
        elif kind != "text":
            problems.append(
                f"{here} is a {kind!r} part; only text parts ({{'type': 'text', 'text': ...}}) "
                "can be trained on"
            )
        elif not isinstance(part.get("text"), str):
            problems.append(f"{here}.text must be a string, got {type(part.get('text')).__name__}")
        else:
            texts.append(part["text"])
    if problems:
        return None, problems
    text = "".join(texts)
    return (text, []) if text.strip() else (None, [f"{where} is empty"])


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


@dataclass(frozen=True)
class TokenizerChecks:
    """What only the tokenizer can check: special tokens in the text, the rendered length."""

    find_special_tokens: SpecialTokenFinder | None = None
    encode: ChatEncoder | None = None
    max_length: int | None = None

    def problems(self, messages: Messages) -> tuple[list[str], Encoding | None]:
        """Problems of one structurally valid conversation, and its encoding when encoded."""
        if self.find_special_tokens is not None:
            forged = [
                f"messages[{i}].content contains {', '.join(map(repr, found))}, which the "
                "tokenizer reads as its special token(s) and so as conversation structure; "
                "remove or reword it"
                for i, message in enumerate(messages)
                if (found := self.find_special_tokens(message["content"]))
            ]
            if forged:
                return forged, None
        if self.encode is None:
            return [], None
        try:
            encoding = self.encode(messages)
        except ValueError as error:
            return [str(error)], None
        tokens = len(encoding["input_ids"])
        if self.max_length is not None and tokens > self.max_length:
            return [f"example is {tokens} tokens, longer than max_length {self.max_length}"], None
        return [], encoding


def validate_records(
    records: Iterable[tuple[int, Any]],
    source: str,
    *,
    encode: ChatEncoder | None = None,
    max_length: int | None = None,
    find_special_tokens: SpecialTokenFinder | None = None,
) -> ValidationReport:
    """Check ``(line number, parsed record)`` pairs; ``source`` names the file in problems."""
    report = ValidationReport()
    checks = TokenizerChecks(find_special_tokens, encode, max_length)
    for line_number, value in records:
        problems, record = _check_record(value)
        encoding = None
        if not problems:
            problems, encoding = checks.problems(record["messages"])
        if problems:
            report.problems += [Problem(source, line_number, p) for p in problems]
            continue
        report.records.append(record)
        report.line_numbers.append(line_number)
        if encoding is not None:
            report.encodings.append(encoding)
    return report


def parse_json_line(line: str | bytes) -> Any:
    """The JSON value of one line, or :class:`Unreadable` saying why there is none."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as error:
            return Unreadable(f"not UTF-8 text: {error.reason} at byte {error.start + 1}")
    if not line.strip():
        return Unreadable("blank line (each line must be one JSON object)")
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        return Unreadable(f"not valid JSON: {error.msg} at column {error.colno}")


def validate_lines(
    lines: Iterable[str | bytes],
    source: str,
    *,
    encode: ChatEncoder | None = None,
    max_length: int | None = None,
    find_special_tokens: SpecialTokenFinder | None = None,
) -> ValidationReport:
    """Check JSON Lines (one chat record per line); ``source`` names the file in problems."""
    parsed = ((n, parse_json_line(line)) for n, line in enumerate(lines, start=1))
    return validate_records(
        parsed,
        source,
        encode=encode,
        max_length=max_length,
        find_special_tokens=find_special_tokens,
    )


def jsonl_lines(data: bytes) -> list[bytes]:
    """The lines of a JSON Lines file: split at LF only (a CR before it is dropped), as
    jsonlines.org defines the format. Not str.splitlines(), which also splits at U+2028 and other
    characters JSON carries unescaped inside strings (json.dumps(..., ensure_ascii=False))."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return [line.removesuffix(b"\r") for line in lines]


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
    messages = [
        {"role": m["role"], "content": content_text(m["content"], "")[0]} for m in value["messages"]
    ]
    return [], {"messages": messages}


def validate_chat_jsonl(
    path: str | Path,
    *,
    encode: ChatEncoder | None = None,
    max_length: int | None = None,
    find_special_tokens: SpecialTokenFinder | None = None,
) -> ValidationReport:
    """Validate a chat JSONL file: all problems as ``file:line: what``, plus the valid records."""
    path = Path(path)
    if not path.is_file():
        return ValidationReport(problems=[Problem(str(path), 0, "file not found")])
    return validate_lines(
        jsonl_lines(path.read_bytes()),
        str(path),
        encode=encode,
        max_length=max_length,
        find_special_tokens=find_special_tokens,
    )


def split_records(
    records: Sequence[Example], fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Seeded shuffle, then the first ``fraction`` (at least one record) becomes validation.
    Records of any kind: the trainer splits its records with their encodings."""
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
