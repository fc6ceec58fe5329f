"""scripts/prepare_data.py: common layouts in, validated split chat JSONL out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.trainer.helpers import chat, write_jsonl


def prepare(repo_root: Path, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "scripts/prepare_data.py", *map(str, args)],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=120,
    )


def read_jsonl(path: Path) -> list[dict]:
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
