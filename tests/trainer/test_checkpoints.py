"""--resume: the newest checkpoint that was written to the end, never a half-written one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phi3_trainer.checkpoints import COMPLETE_FILE, mark_complete, resolve_resume


def checkpoint(out: Path, step: int, state: str | None, world_size: int | None = 1) -> Path:
    """A fabricated checkpoint: ``state`` is the trainer_state.json text (None: not written),
    ``world_size`` the marker's (None: not written); every rank's RNG file is there."""
    folder = out / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    if state is not None:
        (folder / "trainer_state.json").write_text(state)
    rng_files = ["rng_state.pth"] if world_size == 1 else [f"rng_state_{r}.pth" for r in (0, 1)]
    for name in rng_files:
        (folder / name).write_bytes(b"rng")
    if world_size is not None:
        mark_complete(folder, step, world_size)
    return folder


def test_auto_picks_the_newest_complete_checkpoint(tmp_path: Path) -> None:
    checkpoint(tmp_path, 5, json.dumps({"global_step": 5}))
    newest_complete = checkpoint(tmp_path, 10, json.dumps({"global_step": 10}))
    checkpoint(tmp_path, 15, None)  # killed before the state file
    checkpoint(tmp_path, 20, '{"global_st')  # killed while writing it
    (tmp_path / "checkpoint-notes").mkdir()
    assert resolve_resume("auto", tmp_path) == newest_complete
    assert resolve_resume("never", tmp_path) is None
    assert resolve_resume(str(newest_complete), tmp_path) == newest_complete


def test_a_checkpoint_is_complete_only_once_every_rank_wrote_its_rng_state(
    tmp_path: Path,
) -> None:
    complete = checkpoint(tmp_path, 5, json.dumps({"global_step": 5}), world_size=2)
    # Rank 0's state file is written, but the barrier after the save was never reached.
    checkpoint(tmp_path, 10, json.dumps({"global_step": 10}), world_size=None)
    assert resolve_resume("auto", tmp_path) == complete
    # Marked for 2 ranks, but rank 1's RNG file is gone (deleted by hand, say).
    (complete / "rng_state_1.pth").unlink()
    assert resolve_resume("auto", tmp_path) is None
    # A marker cut short by a kill does not count either.
    (complete / "rng_state_1.pth").write_bytes(b"rng")
    (complete / COMPLETE_FILE).write_text('{"global_step": 5, "wor')
    assert resolve_resume("auto", tmp_path) is None


def test_nothing_to_resume_from(tmp_path: Path) -> None:
    assert resolve_resume("auto", tmp_path / "absent") is None
    assert resolve_resume("auto", tmp_path) is None


def test_an_explicit_incomplete_checkpoint_is_refused(tmp_path: Path) -> None:
    incomplete = checkpoint(tmp_path, 15, None)
    with pytest.raises(ValueError, match="not a complete checkpoint folder"):
        resolve_resume(str(incomplete), tmp_path)
