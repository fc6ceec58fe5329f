"""The prepared GPU benchmark (bench/train_gpu.py) runs end to end: checked here on CPU with a tiny
Phi-3 (--smoke), so that the script is ready when a GPU is at hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_gpu_benchmark_smoke_run_reports_throughput_and_mfu(repo_root: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "bench/train_gpu.py", "--smoke", "--runs", "full_packed", "lora_packed"],
        cwd=repo_root, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert not result["skipped"]
    full, lora = result["runs"]["full_packed"], result["runs"]["lora_packed"]
    for run in (full, lora):
        assert run["tokens_per_step"] == 2 * 2048 and run["chats_per_row"] > 1
        assert run["tokens_per_second"] > 0 and run["mfu"] > 0
        assert run["last_loss"] > 0
    assert full["N_lora_params"] == 0 < lora["N_lora_params"]
    assert full["N_matmul_params"] == lora["N_matmul_params"]
