"""Turn common dataset layouts into validated, deduplicated, split chat JSONL for the trainer.

    python scripts/prepare_data.py INPUT [INPUT ...] --out-dir DIR
        [--validation-fraction 0.1] [--seed 42] [--system-prompt TEXT]
        [--tokenizer MODEL_OR_FOLDER --max-length 2048] [--on-invalid fail|drop]

Accepted layouts, per record:
  - chat records: a ``messages`` list (extra columns such as ``prompt_id`` are dropped);
  - prompt/completion pairs: ``prompt`` and ``completion``, each a string or a list of messages;
  - question/answer: ``question`` and ``answer`` columns (CSV, or JSONL objects).
An optional ``system`` column becomes the system message.

Inputs, UTF-8 with or without a byte-order mark (Excel's "CSV UTF-8" has one):
  - ``.jsonl``: one JSON record per line;
  - ``.csv``: a header row, then one record per row (a quoted cell may span lines);
  - ``.json``: a JSON array of records; a ``.json`` file that does not start with ``[`` is read
    as JSON Lines, as many tools name those files.

JSON Lines are split at line feeds only (a carriage return before one is dropped), as the
trainer reads them (data_validation.jsonl_lines): a U+2028 inside a string does not end a record.

Writes DIR/train.jsonl (and DIR/validation.jsonl when the fraction is above 0) and prints a JSON
summary with counts and, given a tokenizer, token-length percentiles. With a tokenizer, the
trainer's own tokenizer checks apply (phi3_trainer.tokenization): the length as it tokenizes, and
text the tokenizer would read as one of its special tokens is refused. Every problem is reported
as ``file:line: what is wrong`` with the line an editor shows (the CSV header is line 1; a record
over several lines is reported at its first), or, in a JSON array, as ``file[i]: what is wrong``
with ``i`` the record's 0-based index in the array: an array is often written on a single line,
where every record would be "line 1". With ``--on-invalid fail`` (default) nothing is written
then.
"""

from __future__ import annotations

import argparse
import codecs
import csv
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phi3_training_rules.data_validation import (
    ChatEncoder,
    ChatRecord,
    Problem,
    SpecialTokenFinder,
    Unreadable,
    ValidationReport,
    jsonl_lines,
    parse_json_line,
    split_records,
    validate_records,
)

PERCENTILES = (50, 90, 95, 99)
SUFFIXES = (".jsonl", ".csv", ".json")


@dataclass(frozen=True)
class Records:
    """The records of one input file, each with the number that locates it in the file."""

    rows: list[tuple[int, Any]]
    by_index: bool = False  # the numbers are 0-based JSON array indexes, not line numbers


def read_records(path: Path) -> Records:
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)  # Excel's byte-order mark
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        advice = "save the file as UTF-8 (in Excel: CSV UTF-8)"
        reason = f"not UTF-8 text (byte 0x{data[error.start]:02x}); {advice}"
        return Records([(line, Unreadable(reason))])
    if path.suffix.lower() == ".csv":
        return Records(list(_csv_records(text)))
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        return _json_array(text)
    return _json_lines(data, text, whole_file_is_one_record=path.suffix.lower() == ".json")


def _json_lines(data: bytes, text: str, *, whole_file_is_one_record: bool) -> Records:
    lines = jsonl_lines(data)
    if whole_file_is_one_record and len(lines) > 1 and isinstance(_json_or_none(text), dict):
        reason = (
            "the file is one JSON object spread over several lines: give the records as a JSON "
            "array, or one record per line (JSON Lines)"
        )
        return Records([(1, Unreadable(reason))])
    return Records([(number, parse_json_line(line)) for number, line in enumerate(lines, 1)])


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _json_array(text: str) -> Records:
    try:
        array = json.loads(text)
    except json.JSONDecodeError as error:
        reason = f"not valid JSON: {error.msg} at column {error.colno}"
        return Records([(error.lineno, Unreadable(reason))])
    # A JSON text that starts with "[" and parses is an array.
    return Records(
        [(index, _array_element(value)) for index, value in enumerate(array)], by_index=True
    )


def _array_element(value: Any) -> Any:
    if isinstance(value, dict):
        return value
    return Unreadable(f"each record of the array must be a JSON object, got {type(value).__name__}")


def _csv_records(text: str) -> Iterator[tuple[int, Any]]:
    """``(line the record starts on, record)``; blank lines are skipped, as csv.DictReader does."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] = []
    header_line = 0
    while True:
        start = reader.line_num + 1  # line_num: lines read so far
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield start, Unreadable(f"not valid CSV: {error}")
            return
        if not cells:
            continue
        if not header:
            header, header_line = [name.strip().lower() for name in cells], start
            continue
        yield start, _csv_record(cells, header, header_line)


def _csv_record(cells: list[str], header: list[str], header_line: int) -> Any:
    extra = cells[len(header) :]
    if len(cells) < len(header) or any(cell.strip() for cell in extra):
        fields = f"{len(cells)} field{'s' if len(cells) != 1 else ''}"
        reason = f"has {fields}, but the header (line {header_line}) has {len(header)}"
        if extra:
            reason += " (a cell that holds a comma must be in double quotes)"
        return Unreadable(reason)
    return {name: cell for name, cell in zip(header, cells, strict=False) if name}


def to_chat(row: Any, system_prompt: str | None) -> Any:
    """Convert one record of any supported layout to ``{"messages": [...]}``.

    Records that match no layout are returned unchanged, so the validator names what is missing.
    """
    if not isinstance(row, dict):
        return row
    if "messages" in row:
        messages = row["messages"]
    elif "prompt" in row and "completion" in row:
        messages = _as_messages(row["prompt"], "user") + _as_messages(
            row["completion"], "assistant"
        )
    elif "question" in row and "answer" in row:
        messages = [
            {"role": "user", "content": row["question"]},
            {"role": "assistant", "content": row["answer"]},
        ]
    else:
        return row
    system = row.get("system") or system_prompt
    # Only a well-formed first message decides; anything else goes to the validator unchanged, so
    # its problem points at the index the file really has.
    first = messages[0] if isinstance(messages, list) and messages else None
    if system and isinstance(first, dict) and first.get("role") != "system":
        messages = [{"role": "system", "content": system}, *messages]
    return {"messages": messages}


def _as_messages(value: Any, role: str) -> list[Any]:
    return value if isinstance(value, list) else [{"role": role, "content": value}]


def deduplicate(records: list[ChatRecord]) -> tuple[list[ChatRecord], int]:
    seen: set[str] = set()
    unique = []
    for record in records:
        key = json.dumps(record["messages"], sort_keys=True, ensure_ascii=False)
        if key not in seen:
            seen.add(key)
            unique.append(record)
    return unique, len(records) - len(unique)


def percentiles(values: list[int]) -> dict[str, int]:
    ordered = sorted(values)
    # Nearest-rank percentiles: each is a length some example really has.
    result = {f"p{p}": ordered[max(0, -(-p * len(ordered) // 100) - 1)] for p in PERCENTILES}
    return {**result, "max": ordered[-1], "min": ordered[0]}


def tokenizer_checks(name_or_path: str) -> tuple[ChatEncoder, SpecialTokenFinder]:
    """The trainer's own checks (phi3_trainer.tokenization): the conversation's tokens, as the
    trainer tokenizes it, and the special tokens a text would be read as."""
    from transformers import AutoTokenizer

    from phi3_trainer.tokenization import chat_encoder, special_token_finder

    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    return chat_encoder(tokenizer, assistant_only_loss=False), special_token_finder(tokenizer)


def write_jsonl(path: Path, records: list[ChatRecord]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("inputs", nargs="+", type=Path, help=".jsonl, .csv or .json files")
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=42, help="seed of the train/validation split")
    parser.add_argument("--system-prompt", help="system message for records that have none")
    parser.add_argument("--tokenizer", help="model id or folder: enables length stats and check")
    parser.add_argument("--max-length", type=int, default=2048, help="tokens (with --tokenizer)")
    parser.add_argument("--on-invalid", choices=("fail", "drop"), default="fail")
    args = parser.parse_args(argv)
    _check_arguments(parser, args)
    report = _validated(args)
    if report.problems and args.on_invalid == "fail":
        return 1
    records, duplicates = deduplicate(report.records)
    if not records:
        print("error: no valid records", file=sys.stderr)
        return 1
    train, validation = records, list[ChatRecord]()
    if args.validation_fraction:
        try:
            train, validation = split_records(records, args.validation_fraction, args.seed)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out_dir / "train.jsonl", train)
    if validation:
        write_jsonl(args.out_dir / "validation.jsonl", validation)
    summary: dict[str, Any] = {
        "valid": len(report.records),
        "invalid": len({(p.file, p.line) for p in report.problems}),
        "duplicates_removed": duplicates,
        "train": len(train),
        "validation": len(validation),
        "seed": args.seed,
        "out_dir": str(args.out_dir),
    }
    if report.token_counts:
        summary["token_length"] = percentiles(report.token_counts)
    print(json.dumps(summary))
    return 0


def _check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with usage (2) on a fraction out of range, a missing input or an unknown type."""
    if not 0 <= args.validation_fraction < 1:
        parser.error(f"--validation-fraction must be in [0, 1), got {args.validation_fraction}")
    missing = [str(p) for p in args.inputs if not p.is_file()]
    if missing:
        parser.error(f"input file(s) not found: {', '.join(missing)}")
    unsupported = [str(p) for p in args.inputs if p.suffix.lower() not in SUFFIXES]
    if unsupported:
        parser.error(f"unsupported file type: {', '.join(unsupported)} (use .jsonl, .csv or .json)")


def _validated(args: argparse.Namespace) -> ValidationReport:
    """Every input's records as chats, validated (with the tokenizer's checks when given), their
    problems printed."""
    encode, find_special_tokens = (
        tokenizer_checks(args.tokenizer) if args.tokenizer else (None, None)
    )
    report = ValidationReport()
    by_index: set[str] = set()  # files whose problems are located by array index
    for path in args.inputs:
        source = read_records(path)
        rows = ((n, to_chat(row, args.system_prompt)) for n, row in source.rows)
        report.extend(
            validate_records(
                rows,
                str(path),
                encode=encode,
                max_length=args.max_length,
                find_special_tokens=find_special_tokens,
            )
        )
        if source.by_index:
            by_index.add(str(path))
    print_problems(report.problems, by_index)
    return report


def print_problems(problems: list[Problem], by_index: set[str]) -> None:
    for problem in problems:
        if problem.file in by_index:
            print(f"{problem.file}[{problem.line}]: {problem.message}", file=sys.stderr)
        else:
            print(problem, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
