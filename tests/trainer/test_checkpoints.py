"""--resume: the newest checkpoint that was written to the end, never a half-written one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phi3_trainer.checkpoints import resolve_resume


def checkpoint(out: Path, step: int, state: str | None) -> Path:
    folder = out / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    if state is not None:
        (folder / "trainer_state.json").write_text(state)
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


def test_nothing_to_resume_from(tmp_path: Path) -> None:
    assert resolve_resume("auto", tmp_path / "absent") is None
    assert resolve_resume("auto", tmp_path) is None


def test_an_explicit_incomplete_checkpoint_is_refused(tmp_path: Path) -> None:
    incomplete = checkpoint(tmp_path, 15, None)
    with pytest.raises(ValueError, match="not a complete checkpoint folder"):
        resolve_resume(str(incomplete), tmp_path)
