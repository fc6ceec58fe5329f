"""Training data checked before any resource: every line valid, each file fingerprinted.

Validation uses the trainer's own stdlib-only validator (phi3_training_rules), before any resource
is registered, so a bad line fails `pulumi up` with `file:line: what` instead of a GPU job failing
minutes later. The fingerprint is of the bytes the upload sends (LF line endings,
line_endings.py), so it names the data, not the checkout.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from phi3_infra.line_endings import read_as_sent
from phi3_infra.paths import project_path
from phi3_training_rules.data_validation import validate_chat_jsonl

_MAX_PROBLEMS_SHOWN = 20


class DataError(ValueError):
    """Training or validation data is missing or invalid; lists `file:line: what` problems."""


@dataclass(frozen=True)
class DataFile:
    role: str  # "train" or "validation": the trainer input it feeds
    path: Path
    sha256: str  # of the bytes uploaded (LF line endings), not of the file on disk
    records: int

    @property
    def asset_name(self) -> str:
        return f"phi3-{self.role}"

    @property
    def asset_version(self) -> str:
        return self.sha256[:16]

    @property
    def blob_name(self) -> str:
        # Content-addressed, and nothing else: changed data is a new blob and a new asset
        # version, a renamed or moved file with the same bytes is neither.
        return f"{self.role}/{self.sha256}.jsonl"


def validate_data(wanted: Mapping[str, str | None]) -> list[DataFile]:
    """Validate the JSONL file of each trainer input (role -> configured path, None: not given);
    raise one DataError listing every problem."""
    files, problems = [], []
    for role, configured in wanted.items():
        if configured is None:
            continue
        path = project_path(configured)
        report = validate_chat_jsonl(path)
        problems += [str(problem) for problem in report.problems]
        if report.ok and not report.records:
            problems.append(f"{path}:0: no records")
        if report.ok and report.records:
            sent = hashlib.sha256(read_as_sent(path)).hexdigest()
            files.append(DataFile(role, path, sent, len(report.records)))
    if problems:
        shown = problems[:_MAX_PROBLEMS_SHOWN]
        if len(problems) > len(shown):
            shown.append(f"... and {len(problems) - len(shown)} more")
        raise DataError(
            f"{len(problems)} problem(s) in the training data; nothing was uploaded:\n  "
            + "\n  ".join(shown)
        )
    return files
