"""The whole product on a laptop, in a few minutes, with no Azure and no GPU.

    python scripts/demo.py [--workdir build/demo] [--max-steps 150]

Stages: build a tiny random-initialized Phi-3 (the real Phi-3 architecture, chat template and
special tokens), validate the shipped sample chat data, fine-tune it with the training image's
entrypoint, serve the result with the serving image's entrypoint on 127.0.0.1, ask it through the
official `openai` client, stop the server, and print the offline plan (with hourly cost) of the
default stack. Exit status 0 only if every stage worked.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "training_image")]

from phi3_trainer.data_validation import validate_chat_jsonl  # noqa: E402 (stdlib only)

SAMPLE_DATA = REPO_ROOT / "scripts" / "data" / "capitals_chat.jsonl"
DEFAULT_STACK = "eastus2"
# (question, the word a model that learned the task answers with)
QUESTIONS = (
    ("What is the capital of Norway?", "Oslo"),
    ("Capital of Japan?", "Tokyo"),
    ("Which city is the capital of Peru?", "Lima"),
)
SERVER_READY_TIMEOUT_S = 180.0
SERVER_STOP_TIMEOUT_S = 30.0


class StageFailed(RuntimeError):
    """A stage did not work; the message says which and why."""


class Stages:
    """Numbered stage lines with their wall time, so a newcomer sees where the minutes go."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0

    @contextlib.contextmanager
    def stage(self, title: str) -> Iterator[None]:
        self.done += 1
        print(f"\n[{self.done}/{self.total}] {title}", flush=True)
        started = time.perf_counter()
        yield
        print(f"      done in {time.perf_counter() - started:.1f} s", flush=True)


def _python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _module_env(image_folder: str) -> dict[str, str]:
    """What the image gives its entrypoint: its own folder on the import path; no hub access."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT / image_folder), *filter(None, [env.get("PYTHONPATH")])]
    )
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return env


def build_base_model(workdir: Path) -> Path:
    from scripts.make_tiny_phi3 import build

    return build(workdir / "base", hidden_size=64, layers=2, heads=4, vocab_size=512, seed=0)


def validate_sample_data() -> int:
    report = validate_chat_jsonl(SAMPLE_DATA)
    if report.problems:
        raise StageFailed("sample data is invalid:\n" + "\n".join(map(str, report.problems)))
    print(f"      {SAMPLE_DATA.relative_to(REPO_ROOT)}: {len(report.records)} conversations, valid")
    return len(report.records)


def fine_tune(base: Path, workdir: Path, max_steps: int) -> Path:
    output_dir = workdir / "run"
    shutil.rmtree(output_dir, ignore_errors=True)
    # A random 2-layer model learns fastest with full fine-tuning and a high learning rate; on
    # Phi-3-mini the trainer's defaults (LoRA, packing, 2e-4) apply unchanged.
    command = _python_module(
        "phi3_trainer",
        *("--model_name_or_path", str(base), "--train_file", str(SAMPLE_DATA)),
        *("--output_dir", str(output_dir), "--no_use_lora"),
        *("--learning_rate", "3e-3", "--warmup_steps", "10", "--max_steps", str(max_steps)),
        *("--per_device_train_batch_size", "16", "--gradient_accumulation_steps", "1"),
        *("--max_length", "256", "--packing", "false", "--activation_checkpointing", "false"),
        *("--eval_strategy", "no", "--save_steps", str(max(max_steps // 3, 1))),
        *("--logging_steps", str(max(max_steps // 6, 1)), "--report_to", "none"),
    )
    print("      $ python -m phi3_trainer " + " ".join(command[3:]), flush=True)
    if subprocess.run(command, env=_module_env("training_image"), check=False).returncode:
        raise StageFailed("the trainer failed (its output is above)")
    merged = output_dir / "merged"
    if not (merged / "config.json").is_file():
        raise StageFailed(f"the trainer finished without a merged model in {merged}")
    return merged


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/ready", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class LocalServer:
    """The serving image's entrypoint on a free local port."""

    def __init__(self, model_dir: Path, log_file: Path) -> None:
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_file = log_file
        self.command = _python_module(
            "phi3_server",
            *("--model-dir", str(model_dir), "--host", "127.0.0.1", "--port", str(self.port)),
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        print("      $ python -m phi3_server " + " ".join(self.command[3:]), flush=True)
        with self.log_file.open("w") as log:
            self.process = subprocess.Popen(
                self.command, env=_module_env("serving_image"), stdout=log, stderr=log
            )
        deadline = time.monotonic() + SERVER_READY_TIMEOUT_S
        while not _ready(self.base_url):
            if self.process.poll() is not None:
                raise StageFailed(f"the server exited early; its log: {self.log_file}")
            if time.monotonic() > deadline:
                raise StageFailed(f"the server was not ready in time; its log: {self.log_file}")
            time.sleep(0.5)
        print(f"      ready at {self.base_url} (log: {self.log_file})", flush=True)

    def stop(self) -> None:
        """SIGTERM, as a container runtime sends it; the server must exit cleanly and soon."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise StageFailed(f"the server ignored SIGTERM; its log: {self.log_file}") from None
        # uvicorn re-raises the signal after its graceful shutdown, so -SIGTERM is a clean exit.
        if code not in (0, -signal.SIGTERM):
            raise StageFailed(f"the server exited with {code} on SIGTERM; its log: {self.log_file}")
        print("      stopped cleanly", flush=True)


def ask(base_url: str) -> int:
    """Ask each question through the openai client; return how many answers were right."""
    from openai import OpenAI

    client = OpenAI(base_url=f"{base_url}/v1", api_key="local-demo", timeout=60, max_retries=0)
    model = client.models.list().data[0].id
    right = 0
    for question, expected in QUESTIONS:
        completion = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": question}],
            temperature=0.0,
            max_tokens=24,
        )
        answer = (completion.choices[0].message.content or "").strip()
        right += expected in answer
        mark = "learned" if expected in answer else f"not yet (expected {expected})"
        print(f"      Q: {question}\n      A: {answer}   [{mark}]", flush=True)
    return right


def print_plan() -> None:
    from scripts import plan

    if plan.main(["--stack", DEFAULT_STACK]) != 0:
        raise StageFailed("the offline plan failed (see above)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=REPO_ROOT / "build" / "demo")
    parser.add_argument("--max-steps", type=int, default=500, help="fine-tuning steps")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    stages = Stages(total=7)
    try:
        with stages.stage("Build a tiny random-initialized Phi-3 (no download)"):
            base = build_base_model(args.workdir)
            print(f"      {base}")
        with stages.stage("Validate the sample chat data"):
            validate_sample_data()
        with stages.stage("Fine-tune with the training image's entrypoint"):
            merged = fine_tune(base, args.workdir, args.max_steps)
        server = LocalServer(merged, args.workdir / "server.log")
        try:
            with stages.stage("Start the serving image's entrypoint on 127.0.0.1"):
                server.start()
            with stages.stage("Ask the fine-tuned model through the `openai` client"):
                right = ask(server.base_url)
        finally:
            with stages.stage("Stop the server (SIGTERM)"):
                server.stop()
        with stages.stage(f"Offline plan of the default stack ({DEFAULT_STACK})"):
            print_plan()
    except StageFailed as failure:
        print(f"\nDEMO FAILED: {failure}", file=sys.stderr)
        return 1
    print(
        f"\nDemo finished in {time.perf_counter() - started:.0f} s: "
        f"{right}/{len(QUESTIONS)} answers show the learned task."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
