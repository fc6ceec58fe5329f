"""Run ``python -m phi3_server`` as a real uvicorn process on 127.0.0.1, as the image does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from openai import OpenAI

from phi3_rehearsal.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
SHUTDOWN_LIMIT_S = 10.0
# The module the image's ENTRYPOINT runs (test_image checks they agree).
SERVER_MODULE = "phi3_server"


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    # /ready status codes seen from the first accepted connection until 200.
    ready_codes: list[int] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def openai(self, api_key: str = "no-key-set") -> OpenAI:
        # No retries: a 429 must reach the test, not be retried away.
        return OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=60)


def _wait_until_ready(server: RunningServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            code = httpx.get(f"{server.url}/ready", timeout=5).status_code
        except httpx.TransportError:
            time.sleep(0.05)
            continue
        server.ready_codes.append(code)
        if code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"server not ready after {timeout} s:\n{server.log()}")


@contextmanager
def serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[RunningServer]:
    """Run the server until the block ends, then SIGTERM it and require a quick, clean exit."""
    port = free_port()
    tmp_path.mkdir(parents=True, exist_ok=True)
    log_path = tmp_path / f"server-{port}.log"
    environment = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT / "serving_image"),
        "HF_HUB_OFFLINE": "1",
        # One torch thread: on cores shared with other jobs, a second intra-op thread makes
        # every parallel op wait for a descheduled thread (measured 3-10x slower steps here).
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    command = [sys.executable, "-m", SERVER_MODULE, "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*command, *args], env=environment, stdout=log, stderr=subprocess.STDOUT
        )
    server = RunningServer(f"http://127.0.0.1:{port}", process, log_path)
    try:
        _wait_until_ready(server, timeout=120)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        try:
            process.wait(timeout=SHUTDOWN_LIMIT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(
                f"server ignored SIGTERM for {SHUTDOWN_LIMIT_S} s:\n{server.log()}"
            ) from None
    # uvicorn re-raises the signal after its graceful shutdown, so -SIGTERM is a clean exit.
    assert process.returncode in (0, -signal.SIGTERM), f"exit {process.returncode}:\n{server.log()}"
    assert "Application shutdown complete" in server.log(), server.log()[-3000:]
    assert time.monotonic() - started < SHUTDOWN_LIMIT_S
