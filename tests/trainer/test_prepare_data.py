"""scripts/prepare_data.py: common layouts in, validated split chat JSONL out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.trainer.helpers import chat, write_jsonl


def prepare(repo_root: Path, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "scripts/prepare_data.py", *map(str, args)],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=120,
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_converts_layouts_dedupes_and_splits_with_seed(tmp_path: Path, repo_root: Path) -> None:
    csv_file = tmp_path / "qa.csv"
    csv_file.write_text(
        "Question,Answer\nWhat is 2+2?,4\nCapital of France?,Paris\nWhat is 2+2?,4\n"
    )
    jsonl_file = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            {"prompt": "hi", "completion": "hello", "system": "Be kind."},
            {
                "prompt": [{"role": "user", "content": "a"}],
                "completion": [{"role": "assistant", "content": "b"}],
            },
            {**chat("x", "y"), "prompt": "x", "prompt_id": "p1"},
            chat("Capital of France?", "Paris"),
        ],
    )
    out = tmp_path / "out"
    proc = prepare(repo_root, csv_file, jsonl_file, "--out-dir", out, "--validation-fraction", 0.4)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary | {"out_dir": None} == {
        "valid": 7, "invalid": 0, "duplicates_removed": 2, "train": 3, "validation": 2,
        "seed": 42, "out_dir": None,
    }  # fmt: skip
    written = read_jsonl(out / "train.jsonl") + read_jsonl(out / "validation.jsonl")
    expected = [
        chat("What is 2+2?", "4"),
        chat("Capital of France?", "Paris"),
        {"messages": [{"role": "system", "content": "Be kind."}, *chat("hi", "hello")["messages"]]},
        chat("a", "b"),
        chat("x", "y"),
    ]
    assert sorted(map(json.dumps, written)) == sorted(map(json.dumps, expected))
    again = tmp_path / "again"
    prepare(repo_root, csv_file, jsonl_file, "--out-dir", again, "--validation-fraction", 0.4)
    assert (again / "validation.jsonl").read_text() == (out / "validation.jsonl").read_text()


def test_invalid_rows_fail_with_every_location_and_write_nothing(
    tmp_path: Path, repo_root: Path
) -> None:
    csv_file = tmp_path / "qa.csv"
    csv_file.write_text("question,answer\nok?,yes\n,no question\nno answer?,\n")
    jsonl_file = tmp_path / "d.jsonl"
    jsonl_file.write_text(json.dumps({"input": "x"}) + "\n{broken\n")
    out = tmp_path / "out"
    proc = prepare(repo_root, csv_file, jsonl_file, "--out-dir", out)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"{csv_file}:3: messages[0].content is empty",
        f"{csv_file}:4: messages[1].content is empty",
        f"{jsonl_file}:1: missing 'messages' (keys present: input)",
        f"{jsonl_file}:2: not valid JSON: Expecting property name enclosed in double quotes"
        " at column 2",
    ]
    assert not out.exists()
    too_few = prepare(repo_root, csv_file, "--out-dir", out, "--on-invalid", "drop")
    assert too_few.returncode == 1
    assert "need at least 2 records to split off a validation set, got 1" in too_few.stderr
    args = ["--out-dir", out, "--on-invalid", "drop", "--validation-fraction", 0]
    dropped = prepare(repo_root, csv_file, *args)
    assert dropped.returncode == 0 and json.loads(dropped.stdout)["invalid"] == 2
    assert read_jsonl(out / "train.jsonl") == [chat("ok?", "yes")]


def test_token_length_percentiles_and_max_length(
    tmp_path: Path, repo_root: Path, tiny_phi3: Path
) -> None:
    records = [chat("q" * n, "a") for n in range(1, 41)]
    data = write_jsonl(tmp_path / "d.jsonl", records)
    args = [data, "--out-dir", tmp_path / "o", "--tokenizer", tiny_phi3, "--on-invalid", "drop"]
    proc = prepare(repo_root, *args, "--max-length", 10_000)
    lengths = json.loads(proc.stdout)["token_length"]
    assert lengths["min"] < lengths["p50"] < lengths["p90"] <= lengths["p99"] <= lengths["max"]
    cut = lengths["p50"]
    limited = prepare(repo_root, *args, "--max-length", cut)
    assert json.loads(limited.stdout)["token_length"]["max"] == cut
    assert f"longer than max_length {cut}" in limited.stderr


def test_a_malformed_first_message_is_a_located_problem_with_or_without_system_prompt(
    tmp_path: Path, repo_root: Path
) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": ["hello"]}) + "\n")
    for system in (["--system-prompt", "Be brief."], []):
        proc = prepare(repo_root, data, "--out-dir", tmp_path / "out", *system)
        assert proc.returncode == 1
        # The index is the file's own: no system message was put in front of the bad one.
        assert proc.stderr.splitlines() == [f"{data}:1: messages[0] must be an object, got str"]


# -- data as users bring it ------------------------------------------------------------------------
def test_an_excel_csv_with_a_byte_order_mark_and_crlf_is_read(
    tmp_path: Path, repo_root: Path
) -> None:
    """Excel's "CSV UTF-8" starts with a byte-order mark and ends lines with CRLF."""
    csv_file = tmp_path / "excel.csv"
    csv_file.write_bytes("\ufeffQuestion,Answer\r\nCafé?,Oui\r\n".encode())
    jsonl_file = tmp_path / "bom.jsonl"
    jsonl_file.write_bytes(("\ufeff" + json.dumps(chat("x", "y")) + "\r\n").encode())
    out = tmp_path / "out"
    proc = prepare(repo_root, csv_file, jsonl_file, "--out-dir", out, "--validation-fraction", 0)
    assert proc.returncode == 0, proc.stderr
    assert read_jsonl(out / "train.jsonl") == [chat("Café?", "Oui"), chat("x", "y")]


def test_a_json_array_is_read_and_problems_name_the_array_index(
    tmp_path: Path, repo_root: Path
) -> None:
    records = [chat("a", "b"), chat("c", ""), "not a record", {"question": "q", "answer": "r"}]
    data = tmp_path / "records.json"
    data.write_text(json.dumps(records, indent=2))
    out = tmp_path / "out"
    proc = prepare(repo_root, data, "--out-dir", out)
    assert proc.returncode == 1
    # [i] is the record's 0-based index in the array, whatever lines the array spans.
    assert proc.stderr.splitlines() == [
        f"{data}[1]: messages[1].content is empty",
        f"{data}[2]: each record of the array must be a JSON object, got str",
    ]
    dropped = prepare(repo_root, data, "--out-dir", out, "--on-invalid", "drop",
                      "--validation-fraction", 0)  # fmt: skip
    assert dropped.returncode == 0, dropped.stderr
    assert read_jsonl(out / "train.jsonl") == [chat("a", "b"), chat("q", "r")]


def test_a_json_file_that_is_no_array_of_records_gets_one_message(
    tmp_path: Path, repo_root: Path
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('[\n  {"messages": []},\n  {"messages": [}\n]\n')
    one_object = tmp_path / "one.json"
    one_object.write_text(json.dumps(chat("a", "b"), indent=2))
    proc = prepare(repo_root, broken, one_object, "--out-dir", tmp_path / "out")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"{broken}:3: not valid JSON: Expecting value at column 17",
        f"{one_object}:1: the file is one JSON object spread over several lines: give the records"
        " as a JSON array, or one record per line (JSON Lines)",
    ]


def test_line_numbers_are_the_ones_an_editor_shows(tmp_path: Path, repo_root: Path) -> None:
    """JSON allows U+2028 in a string unescaped; no editor starts a line there. A CSV record over
    two lines (a quoted line break) is reported at the line it starts on; the header is line 1."""
    jsonl_file = tmp_path / "d.jsonl"
    jsonl_file.write_text(
        json.dumps(chat("one\u2028two", "three"), ensure_ascii=False) + "\n{broken\n"
    )
    csv_file = tmp_path / "qa.csv"
    csv_file.write_text('question,answer\nok?,"yes,\nover two lines"\n,"no\nquestion"\nshort\n')
    proc = prepare(repo_root, jsonl_file, csv_file, "--out-dir", tmp_path / "out")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"{jsonl_file}:2: not valid JSON: Expecting property name enclosed in double quotes"
        " at column 2",
        f"{csv_file}:4: messages[0].content is empty",
        f"{csv_file}:6: has 1 field, but the header (line 1) has 2",
    ]


def test_a_file_that_is_not_utf8_is_one_located_problem(tmp_path: Path, repo_root: Path) -> None:
    """A CSV saved as Windows-1252 (Excel's plain "CSV" in western locales)."""
    csv_file = tmp_path / "legacy.csv"
    csv_file.write_bytes("question,answer\nok?,yes\nCafé?,Oui\n".encode("cp1252"))
    proc = prepare(repo_root, csv_file, "--out-dir", tmp_path / "out")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"{csv_file}:3: not UTF-8 text (byte 0xe9); save the file as UTF-8 (in Excel: CSV UTF-8)"
    ]
