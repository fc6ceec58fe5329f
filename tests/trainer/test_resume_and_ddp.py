"""Preemption: SIGKILL mid-run, then --resume auto finishes the same steps; DDP on CPU."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phi3_trainer.checkpoints import COMPLETE_FILE, newest_complete_checkpoint
from tests.trainer.helpers import FAST_FLAGS, TRAINER_ENV, TRAINER_MODULE

pytestmark = pytest.mark.slow

MAX_STEPS = 40


def test_sigkill_then_resume_auto_finishes_at_the_same_step(
    tmp_path: Path, tiny_phi3: Path, next_number_file: Path, repo_root: Path, run_trainer
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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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
