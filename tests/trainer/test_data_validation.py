"""Data validation: every problem, as file:line, before anything heavy is loaded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from phi3_trainer.data_validation import (
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
    record = {
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

    def count_chars(messages: list[dict[str, str]]) -> int:
        return sum(len(m["content"]) for m in messages)

    report = validate_chat_jsonl(path, count_tokens=count_chars, max_length=20)
    assert [str(p) for p in report.problems] == [
        f"{path}:2: example is 51 tokens, longer than max_length 20"
    ]
    assert report.token_counts == [7]


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


def test_importable_without_torch_transformers_or_trl(repo_root: Path) -> None:
    # The Pulumi program's environment has none of them.
    code = (
        "import sys, phi3_trainer.data_validation;"
        "heavy = {'torch', 'transformers', 'trl'} & set(sys.modules); assert not heavy, heavy"
    )
    subprocess.run(
        [sys.executable, "-c", code], cwd=repo_root / "training_image", check=True, timeout=60
    )
