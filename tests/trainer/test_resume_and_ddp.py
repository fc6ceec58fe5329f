"""Preemption: SIGKILL mid-run, then --resume auto finishes the same steps; DDP on CPU."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phi3_rehearsal.ports import free_port
from phi3_trainer.checkpoints import COMPLETE_FILE, newest_complete_checkpoint
from tests.trainer.helpers import FAST_FLAGS, TRAINER_ENV, TRAINER_MODULE, RunTrainer

pytestmark = pytest.mark.slow

MAX_STEPS = 40


def test_sigkill_then_resume_auto_finishes_at_the_same_step(
    tmp_path: Path,
    tiny_phi3: Path,
    next_number_file: Path,
    repo_root: Path,
    run_trainer: RunTrainer,
) -> None:
    out = tmp_path / "out"
    args = ["--model_name_or_path", str(tiny_phi3), "--train_file", str(next_number_file),
            "--output_dir", str(out), "--max_steps", str(MAX_STEPS), "--save_steps", "5",
            "--save_total_limit", "2", "--validation_split", "0", "--learning_rate", "1e-2",
            *FAST_FLAGS]  # fmt: skip
    first = subprocess.Popen(
        [sys.executable, "-m", TRAINER_MODULE, *args],
        cwd=repo_root,
        env=TRAINER_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while newest_complete_checkpoint(out) is None and time.monotonic() < deadline:
        assert first.poll() is None, "the first run ended before it could be killed"
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    assert first.wait(timeout=30) == -signal.SIGKILL
    killed_at = newest_complete_checkpoint(out)
    assert killed_at is not None and not (out / "metrics.json").exists()
    step_at_kill = int(killed_at.name.split("-")[1])
    assert step_at_kill < MAX_STEPS

    proc = run_trainer([*args, "--resume", "auto"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    run = json.loads((out / "run.json").read_text())
    assert metrics["global_step"] == MAX_STEPS
    assert Path(run["resumed_from"]).name.startswith("checkpoint-")
    assert int(Path(run["resumed_from"]).name.split("-")[1]) >= step_at_kill
    # The second run trained only the remaining steps: fewer tokens than the whole run.
    assert 0 < metrics["tokens_this_run"] < metrics["tokens_seen"]
    assert (out / f"checkpoint-{MAX_STEPS}").is_dir() and (out / "merged").is_dir()


def test_two_process_ddp_on_cpu_with_the_same_entrypoint(
    tmp_path: Path, tiny_phi3: Path, next_number_file: Path, repo_root: Path
) -> None:
    out = tmp_path / "out"
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node",
            "2",
            "--master_port",
            str(free_port()),
            "-m",
            TRAINER_MODULE,
            "--model_name_or_path",
            str(tiny_phi3),
            "--train_file",
            str(next_number_file),
            "--output_dir",
            str(out),
            "--max_steps",
            "6",
            "--save_steps",
            "3",
            "--validation_split",
            "0.1",
            *FAST_FLAGS,
        ],
        cwd=repo_root,
        env=TRAINER_ENV,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["global_step"] == 6
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "merged" / "model.safetensors").is_file()
    # Marked complete after both ranks wrote their RNG state, so --resume auto would take it.
    assert newest_complete_checkpoint(out) == out / "checkpoint-6"
    assert json.loads((out / "checkpoint-6" / COMPLETE_FILE).read_text())["world_size"] == 2


def _files(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``folder``: content hash and modification time (ns)."""
    return {
        str(path.relative_to(folder)): (
            hashlib.sha256(path.read_bytes()).hexdigest(),
            path.stat().st_mtime_ns,
        )
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_a_finished_run_rerun_changes_nothing_and_a_final_checkpoint_trains_nothing_more(
    tmp_path: Path, tiny_phi3: Path, next_number_file: Path, run_trainer: RunTrainer
) -> None:
    out = tmp_path / "out"
    # 36 training examples pack into 2 rows of 128 tokens: 2 steps an epoch, so step 7 ends
    # mid-epoch, where the Trainer evaluates again at the epoch's end and a resumed run used
    # to train an eighth step.
    args = ["--model_name_or_path", str(tiny_phi3), "--train_file", str(next_number_file),
            "--output_dir", str(out), "--max_steps", "7", "--save_steps", "4",
            "--validation_split", "0.1", *FAST_FLAGS]  # fmt: skip
    first = run_trainer(args)
    assert first.returncode == 0, first.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["step"] for h in metrics["eval_history"]].count(7) == 1  # the final evaluation once
    assert metrics["global_step"] == 7
    finished = _files(out)

    # A resubmitted job (--resume auto, the default): the finished run is left as it is.
    again = run_trainer(args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout.splitlines()[-1]) == metrics
    assert _files(out) == finished

    # Killed after its last checkpoint, before the outputs: the rerun trains nothing more and
    # writes the outputs from that checkpoint, which it leaves untouched.
    for output in ("run.json", "metrics.json", "merged", "adapter"):
        shutil.rmtree(out / output) if (out / output).is_dir() else (out / output).unlink()
    checkpoints = _files(out)
    resumed = run_trainer(args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _files(out).items() >= checkpoints.items()
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 7
    for model_file in ("merged/model.safetensors", "adapter/adapter_model.safetensors"):
        assert _files(out)[model_file][0] == finished[model_file][0]
