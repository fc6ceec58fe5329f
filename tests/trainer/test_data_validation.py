"""Data validation: every problem, as file:line, before anything heavy is loaded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from phi3_training_rules.data_validation import (
    InvalidDataError,
    split_records,
    validate_chat_jsonl,
)
from tests.trainer.helpers import chat


def msg(role: str, content: object) -> dict[str, object]:
    return {"role": role, "content": content}


BAD_LINES = {
    # line number -> (JSON line, phrase the report must contain)
    2: ("{not json", "not valid JSON"),
    3: (json.dumps({"text": "hi"}), "missing 'messages' (keys present: text)"),
    4: (json.dumps({"messages": [msg("user", "a"), msg("bot", "b")]}), "messages[1].role"),
    5: (json.dumps({"messages": [msg("user", "a"), msg("assistant", "")]}), "content is empty"),
    6: (json.dumps({"messages": [msg("user", 3), msg("assistant", "b")]}), "must be a string"),
    7: (
        json.dumps({"messages": [msg("user", "a"), msg("system", "s"), msg("assistant", "b")]}),
        "only the first message may be one",
    ),
    8: (
        json.dumps({"messages": [msg("user", "a"), msg("user", "b"), msg("assistant", "c")]}),
        "turns alternate",
    ),
    9: (json.dumps({"messages": [msg("user", "a")]}), "last message must be the assistant's"),
    10: (json.dumps({"messages": []}), "'messages' is empty"),
    11: ("", "blank line"),
    12: (json.dumps([1, 2]), "must be a JSON object"),
}


def test_reports_every_problem_with_file_and_line_and_keeps_the_valid(tmp_path: Path) -> None:
    good = json.dumps({"messages": [msg("system", "s"), msg("user", "q"), msg("assistant", "a")]})
    lines = [good] + [BAD_LINES[n][0] for n in sorted(BAD_LINES)] + [good]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")

    report = validate_chat_jsonl(path)

    assert report.line_numbers == [1, 13]
    assert len(report.records) == 2 and not report.ok
    for line, (_, phrase) in BAD_LINES.items():
        found = [str(p) for p in report.problems if p.line == line]
        assert any(s.startswith(f"{path}:{line}: ") and phrase in s for s in found), (line, found)
    message = str(InvalidDataError(report.problems))
    assert f"{len(report.problems)} problem(s)" in message and f"{path}:12: " in message


def test_valid_records_are_normalised_to_messages_only(tmp_path: Path) -> None:
    record: dict[str, Any] = {
        "prompt": "q",
        "prompt_id": "7",
        "messages": [msg("user", "q"), msg("assistant", "a")],
    }
    record["messages"][0]["name"] = "extra"
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(record) + "\n")
    assert validate_chat_jsonl(path).records == [chat("q", "a")]


def test_too_long_examples_are_reported_with_their_length(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(chat("short", "ok")) + "\n" + json.dumps(chat("x" * 50, "y")) + "\n")

    def one_token_per_character(messages: list[dict[str, str]]) -> dict[str, list[int]]:
        return {"input_ids": [ord(c) for m in messages for c in m["content"]]}

    report = validate_chat_jsonl(path, encode=one_token_per_character, max_length=20)
    assert [str(p) for p in report.problems] == [
        f"{path}:2: example is 51 tokens, longer than max_length 20"
    ]
    # The valid record keeps its encoding, for the trainer to train on without tokenizing again.
    assert report.token_counts == [7]
    assert report.encodings == [{"input_ids": [ord(c) for c in "shortok"]}]


def test_missing_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    report = validate_chat_jsonl(tmp_path / "absent.jsonl")
    assert [str(p) for p in report.problems] == [f"{tmp_path / 'absent.jsonl'}:0: file not found"]


def test_split_is_seeded_disjoint_and_complete() -> None:
    records = [chat(f"q{i}", f"a{i}") for i in range(20)]
    train, validation = split_records(records, 0.25, seed=3)
    again = split_records(records, 0.25, seed=3)
    other = split_records(records, 0.25, seed=4)
    assert (train, validation) == again and validation != other[1]
    assert len(validation) == 5 and sorted(map(str, train + validation)) == sorted(
        map(str, records)
    )
    with pytest.raises(ValueError, match="at least 2 records"):
        split_records(records[:1], 0.5, seed=0)


def test_the_rules_package_imports_without_torch_transformers_or_trl(tmp_path: Path) -> None:
    # The Pulumi program's environment has none of them; every module of the shared package.
    modules = ", ".join(
        f"phi3_training_rules.{name}"
        for name in ("data_validation", "flag_rules", "memory", "attention", "sharding")
    )
    code = (
        f"import sys, {modules};"
        "heavy = {'torch', 'transformers', 'trl'} & set(sys.modules); assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, timeout=60)


def test_text_parts_become_their_text_and_other_parts_are_refused(tmp_path: Path) -> None:
    def user(content: object) -> str:
        return json.dumps({"messages": [msg("user", content), msg("assistant", "ok")]})

    text = [{"type": "text", "text": "Hello"}, {"type": "text", "text": " there"}]
    path = tmp_path / "d.jsonl"
    path.write_text(
        "\n".join(
            [
                user(text),
                user([{"type": "input_audio", "input_audio": {"data": "..."}}]),
                user(["Hello"]),
                user([{"type": "text"}]),
                user([]),
                user([{"type": "text", "text": "  "}]),
            ]
        )
        + "\n"
    )
    report = validate_chat_jsonl(path)
    assert report.records == [chat("Hello there", "ok")]
    assert [str(p) for p in report.problems] == [
        f"{path}:2: messages[0].content[0] is a 'input_audio' part; only text parts "
        "({'type': 'text', 'text': ...}) can be trained on",
        f"{path}:3: messages[0].content[0] must be an object, got str",
        f"{path}:4: messages[0].content[0].text must be a string, got NoneType",
        f"{path}:5: messages[0].content is empty",
        f"{path}:6: messages[0].content is empty",
    ]


def test_a_lone_surrogate_is_a_line_error_and_a_pair_is_a_character(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    # JSON escapes as a file holds them: a high surrogate alone, then a pair (U+1F600).
    path.write_text(
        '{"messages": [{"role": "user", "content": "x\\ud800"}, '
        '{"role": "assistant", "content": "y"}]}\n'
        '{"messages": [{"role": "user", "content": "\\ud83d\\ude00"}, '
        '{"role": "assistant", "content": "y"}]}\n'
    )
    report = validate_chat_jsonl(path)
    assert report.records == [chat("\U0001f600", "y")]
    assert [str(p) for p in report.problems] == [
        f"{path}:1: messages[0].content has invalid Unicode: a lone surrogate U+D800 at "
        "character 1 (an escape \\ud800-\\udfff must be half of a pair that makes one character)"
    ]


def test_lines_split_at_newlines_only_and_bad_bytes_name_their_line(tmp_path: Path) -> None:
    # U+2028 is valid unescaped inside a JSON string (json.dumps(..., ensure_ascii=False)
    # writes it so); str.splitlines() would cut the record in two.
    separated = json.dumps(chat("a\u2028b", "c"), ensure_ascii=False).encode()
    path = tmp_path / "d.jsonl"
    path.write_bytes(separated + b"\r\n" + b'{"messages": "\xff"}\n' + separated + b"\n")
    report = validate_chat_jsonl(path)
    assert report.line_numbers == [1, 3] and report.records[0] == chat("a\u2028b", "c")
    assert [str(p) for p in report.problems] == [
        f"{path}:2: not UTF-8 text: invalid start byte at byte 15"
    ]


def test_special_tokens_and_unrenderable_examples_are_refused_by_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(
        json.dumps(chat("fine", "<END> of it")) + "\n"
        + json.dumps(chat("fine", "fine")) + "\n"
        + json.dumps(chat("refused by the template", "fine")) + "\n"
    )  # fmt: skip

    def find(text: str) -> list[str]:
        return [token for token in ("<END>", "<USER>") if token in text]

    def encode(messages: list[dict[str, str]]) -> dict[str, list[int]]:
        if messages[0]["content"].startswith("refused"):
            raise ValueError("the chat template cannot render it: no")
        return {"input_ids": [1, 2, 3]}

    report = validate_chat_jsonl(path, encode=encode, find_special_tokens=find)
    assert report.line_numbers == [2] and report.token_counts == [3]
    assert [str(p) for p in report.problems] == [
        f"{path}:1: messages[1].content contains '<END>', which the tokenizer reads as its "
        "special token(s) and so as conversation structure; remove or reword it",
        f"{path}:3: the chat template cannot render it: no",
    ]
