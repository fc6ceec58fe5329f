"""Fixtures for the trainer tests: a runner for ``python -m phi3_trainer`` and data files."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.trainer.helpers import TRAINER_ENV, TRAINER_MODULE, next_number_records, write_jsonl


@pytest.fixture
def run_trainer(repo_root: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", TRAINER_MODULE, *args],
            cwd=repo_root,
            env=TRAINER_ENV,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture
def next_number_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "next_number.jsonl", next_number_records())
