"""Find the checkpoint to resume from, so a preempted job picks up where it stopped."""

from __future__ import annotations

import json
import re
from pathlib import Path

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# The Trainer writes trainer_state.json after the weights, optimizer and RNG states: a checkpoint
# whose state file parses and names its own step was written to the end.
_STATE_FILE = "trainer_state.json"


def is_complete(checkpoint: Path) -> bool:
    match = _CHECKPOINT.match(checkpoint.name)
    try:
        state = json.loads((checkpoint / _STATE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return match is not None and state.get("global_step") == int(match.group(1))


def newest_complete_checkpoint(output_dir: str | Path) -> Path | None:
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    numbered = [
        (int(m.group(1)), path)
        for path in folder.iterdir()
        if path.is_dir() and (m := _CHECKPOINT.match(path.name))
    ]
    for _, path in sorted(numbered, reverse=True):
        if is_complete(path):
            return path
    return None


def resolve_resume(resume: str, output_dir: str | Path) -> Path | None:
    """``auto`` -> newest complete checkpoint or None; ``never`` -> None; else that checkpoint."""
    if resume == "never":
        return None
    if resume == "auto":
        return newest_complete_checkpoint(output_dir)
    checkpoint = Path(resume)
    if not is_complete(checkpoint):
        raise ValueError(
            f"--resume {resume}: not a complete checkpoint folder (expected checkpoint-N with a "
            f"{_STATE_FILE} for step N); use 'auto', 'never' or a checkpoint path"
        )
    return checkpoint
