"""Turn common dataset layouts into validated, deduplicated, split chat JSONL for the trainer.

    python scripts/prepare_data.py INPUT [INPUT ...] --out-dir DIR
        [--validation-fraction 0.1] [--seed 42] [--system-prompt TEXT]
        [--tokenizer MODEL_OR_FOLDER --max-length 2048] [--on-invalid fail|drop]

Accepted layouts, per record:
  - chat records: a ``messages`` list (extra columns such as ``prompt_id`` are dropped);
  - prompt/completion pairs: ``prompt`` and ``completion``, each a string or a list of messages;
  - question/answer: ``question`` and ``answer`` columns (CSV, or JSONL objects).
An optional ``system`` column becomes the system message. Inputs are ``.jsonl`` or ``.csv``.

Writes DIR/train.jsonl (and DIR/validation.jsonl when the fraction is above 0) and prints a JSON
summary with counts and, given a tokenizer, token-length percentiles. Every problem is reported
as ``file:line: what is wrong``; with ``--on-invalid fail`` (default) nothing is written then.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "training_image"))

from phi3_trainer.data_validation import (
    ChatRecord,
    Problem,
    TokenCounter,
    ValidationReport,
    parse_json_line,
    split_records,
    validate_records,
)

PERCENTILES = (50, 90, 95, 99)


def read_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """``(line number, record)`` for each record of a JSONL or CSV file."""
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            for row in reader:
                # line_num is the physical line the row ended on; the header is line 1.
                yield reader.line_num, {k.strip().lower(): v for k, v in row.items() if k}
    elif path.suffix.lower() in (".jsonl", ".json"):
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle.read().splitlines(), start=1):
                yield number, parse_json_line(line)
    else:
        raise SystemExit(f"{path}: unsupported file type {path.suffix!r} (use .jsonl or .csv)")


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


def tokenizer_counter(name_or_path: str) -> TokenCounter:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path)

    def count(messages: list[dict[str, str]]) -> int:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count


def write_jsonl(path: Path, records: list[ChatRecord]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("inputs", nargs="+", type=Path, help=".jsonl or .csv files")
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=42, help="seed of the train/validation split")
    parser.add_argument("--system-prompt", help="system message for records that have none")
    parser.add_argument("--tokenizer", help="model id or folder: enables length stats and check")
    parser.add_argument("--max-length", type=int, default=2048, help="tokens (with --tokenizer)")
    parser.add_argument("--on-invalid", choices=("fail", "drop"), default="fail")
    args = parser.parse_args(argv)
    if not 0 <= args.validation_fraction < 1:
        parser.error(f"--validation-fraction must be in [0, 1), got {args.validation_fraction}")
    missing = [str(p) for p in args.inputs if not p.is_file()]
    if missing:
        parser.error(f"input file(s) not found: {', '.join(missing)}")

    count_tokens = tokenizer_counter(args.tokenizer) if args.tokenizer else None
    report = ValidationReport()
    for path in args.inputs:
        rows = ((n, to_chat(row, args.system_prompt)) for n, row in read_rows(path))
        max_length = args.max_length if count_tokens else None
        report.extend(
            validate_records(rows, str(path), count_tokens=count_tokens, max_length=max_length)
        )
    print_problems(report.problems)
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


def print_problems(problems: list[Problem]) -> None:
    for problem in problems:
        print(problem, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
