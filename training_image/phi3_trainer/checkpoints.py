"""Find the checkpoint to resume from, so a preempted job picks up where it stopped."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_STATE_FILE = "trainer_state.json"
# Rank 0 writes trainer_state.json while other ranks may still be writing their RNG state (the
# Trainer has no barrier there), so the state file alone does not prove a checkpoint whole. This
# marker is written after a barrier that follows the save, and records the world size so that
# the RNG file of every rank, which resuming loads, can be checked too.
COMPLETE_FILE = "checkpoint_complete.json"
# A run's outputs: train.py writes the models, then METRICS_FILE, then RUN_RECORD (atomically), so
# a RUN_RECORD means that everything before it is whole: the run finished.
METRICS_FILE = "metrics.json"
RUN_RECORD = "run.json"


def rng_state_files(world_size: int) -> list[str]:
    """The RNG files the Trainer writes: one for a single process, else one per rank."""
    if world_size <= 1:
        return ["rng_state.pth"]
    return [f"rng_state_{rank}.pth" for rank in range(world_size)]


def mark_complete(checkpoint: Path, global_step: int, world_size: int) -> None:
    """Call once every rank has finished writing ``checkpoint``."""
    record = {"global_step": global_step, "world_size": world_size}
    (checkpoint / COMPLETE_FILE).write_text(json.dumps(record) + "\n")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_complete(checkpoint: Path) -> bool:
    match = _CHECKPOINT.match(checkpoint.name)
    if match is None:
        return False
    step = int(match.group(1))
    state, marker = _read_json(checkpoint / _STATE_FILE), _read_json(checkpoint / COMPLETE_FILE)
    if not isinstance(state, dict) or not isinstance(marker, dict):
        return False
    world_size = marker.get("world_size")
    return (
        state.get("global_step") == step
        and marker.get("global_step") == step
        and isinstance(world_size, int)
        and all((checkpoint / name).is_file() for name in rng_state_files(world_size))
    )


def finished_run_metrics(output_dir: str | Path) -> dict[str, Any] | None:
    """The metrics of the run ``output_dir`` holds if that run finished, else None."""
    folder = Path(output_dir)
    run, metrics = _read_json(folder / RUN_RECORD), _read_json(folder / METRICS_FILE)
    return metrics if isinstance(run, dict) and isinstance(metrics, dict) else None


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
            f"{_STATE_FILE} and a {COMPLETE_FILE} for step N, and the RNG state of every rank); "
            "use 'auto', 'never' or a checkpoint path"
        )
    return checkpoint
