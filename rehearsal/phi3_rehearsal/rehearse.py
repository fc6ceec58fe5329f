"""Rehearse a stack here: what `pulumi up` would send to Azure ML, run as Azure ML runs it.

    python scripts/rehearse.py [--stack demo] [--workdir build/rehearsal/<stack>]

No Azure, Docker or GPU: the stack is planned offline (the real program under Pulumi's mocks), the
planned training job runs in the trainer image's own environment with Azure ML's job runtime
(inputs mounted read-only, `${{...}}` substituted, its variables set), the model the program
registers is laid out as a managed online deployment mounts it, and the planned deployment runs
in the server image's environment behind a local gateway that applies the endpoint's auth and
request settings (phi3_rehearsal). Then the official `openai` client and the reference
workflow's two `/score` bodies talk to it through that gateway. A numbered line per stage, with
its wall time; exit status 0 only if every stage worked.

The demo stack (`Pulumi.demo.yaml`, what `make demo` rehearses) fine-tunes a tiny random Phi-3
that stage 1 builds into the folder its `baseModel` names.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from phi3_infra.build_context import ImageContextError
from phi3_infra.cli.plan import plan_stack
from phi3_infra.config import ConfigError
from phi3_infra.paths import PROJECT_ROOT
from phi3_infra.stack_files import stack_file_config
from phi3_infra.tooling.offline import OfflineRun
from phi3_infra.training_data import DataError
from phi3_rehearsal.deployment import DeploymentFailed, RunningDeployment, deploy_planned
from phi3_rehearsal.images import ImageSpecError, image_env
from phi3_rehearsal.job import JobContractError, JobFailed, run_planned_job

BASE_MODEL_KEY = "phi3-foundry:baseModel"
DATA_KEYS = {"train": "phi3-foundry:trainingData", "validation": "phi3-foundry:validationData"}
# Where the demo stack's tiny model lives: built by stage 1 when a stack's baseModel names it.
TINY_MODEL = "build/demo/tiny-phi3"
# (question, the word a model that learned the demo task answers with)
QUESTIONS = (
    ("What is the capital of Norway?", "Oslo"),
    ("Capital of Japan?", "Tokyo"),
    ("Which city is the capital of Peru?", "Lima"),
)
# The reference workflow's two scoring bodies (serving_image/README.md, "Routes").
SCORE_BODIES: tuple[dict[str, Any], ...] = (
    {"input_data": ["What is the capital of Norway?"], "params": {"max_new_tokens": 24}},
    {
        "input_data": {
            "input_string": [{"role": "user", "content": "Capital of Japan?"}],
            "parameters": {"max_new_tokens": 24},
        }
    },
)
JOB_TIMEOUT_S = 900.0


class StageFailed(RuntimeError):
    """A stage did not work; the message says which and why."""


class Stages:
    """Numbered stage lines with their wall time, so a newcomer sees where the minutes go."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0
        self.timings: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def stage(self, title: str) -> Iterator[None]:
        self.done += 1
        print(f"\n[{self.done}/{self.total}] {title}", flush=True)
        started = time.perf_counter()
        yield
        elapsed = time.perf_counter() - started
        self.timings.append((title, elapsed))
        print(f"      done in {elapsed:.1f} s", flush=True)


def stack_config(stack: str) -> dict[str, str]:
    path = PROJECT_ROOT / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        stacks = sorted(p.name.split(".")[1] for p in PROJECT_ROOT.glob("Pulumi.*.yaml"))
        raise StageFailed(f"no stack file {path.name}; stacks here: {', '.join(stacks)}")
    config = stack_file_config(path)
    stages = config.get("phi3-foundry:stages", "")
    if '"train"' not in stages or '"serve"' not in stages:
        raise StageFailed(
            f"stack {stack} does not train and serve (stages {stages or '[infra]'}): there is "
            "no job or deployment to rehearse"
        )
    return config


def base_model(config: dict[str, str]) -> dict[str, str]:
    """Build the tiny model a stack's baseModel names (the demo's) and name it absolutely: the
    job runs in the image's working directory, not the repository's."""
    if config.get(BASE_MODEL_KEY) != TINY_MODEL:
        print(f"      baseModel {config.get(BASE_MODEL_KEY)!r}: nothing to build")
        return config
    from phi3_rehearsal.tiny_phi3 import build

    folder = PROJECT_ROOT / TINY_MODEL
    if not (folder / "config.json").is_file():
        build(folder, hidden_size=64, layers=2, heads=4, vocab_size=512, seed=0)
    print(f"      {folder}")
    return config | {BASE_MODEL_KEY: str(folder)}


def plan(config: dict[str, str], stack: str) -> OfflineRun:
    try:
        run = plan_stack(config, stack)
    except (ConfigError, DataError, ImageContextError) as error:
        raise StageFailed(f"Pulumi.{stack}.yaml: {error}") from None
    job = run.named("training-job")
    print(f"      job {job.inputs['id']}: {job.inputs['properties']['command']}", flush=True)
    return run


def data_files(config: dict[str, str]) -> dict[str, Path]:
    return {role: PROJECT_ROOT / config[key] for role, key in DATA_KEYS.items() if config.get(key)}


def chat(deployment: RunningDeployment) -> int:
    """Ask each question through the openai client at the endpoint; return how many were right."""
    from openai import OpenAI

    client = OpenAI(
        base_url=deployment.openai_base_url,
        api_key=deployment.api_key or "unused",
        timeout=60,
        max_retries=0,
    )
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


def score(deployment: RunningDeployment) -> None:
    """Both of the reference workflow's bodies, at the scoring URI, with the endpoint's key."""
    headers = {"Authorization": f"Bearer {deployment.api_key}"} if deployment.api_key else {}
    for body in SCORE_BODIES:
        response = httpx.post(deployment.scoring_uri, json=body, headers=headers, timeout=60)
        if response.status_code != 200:
            raise StageFailed(
                f"POST {deployment.scoring_uri} answered {response.status_code}: {response.text}"
            )
        print(f"      /score {list(body['input_data'])[:1]} -> {response.json()}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", default="demo", help="stack to rehearse (Pulumi.<stack>.yaml)")
    parser.add_argument("--workdir", type=Path, help="default: build/rehearsal/<stack>")
    args = parser.parse_args(argv)
    workdir = args.workdir or PROJECT_ROOT / "build" / "rehearsal" / args.stack
    workdir.mkdir(parents=True, exist_ok=True)
    # The server's torch threads stay off the trainer's core while both run in this script.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    started = time.perf_counter()
    stages = Stages(total=7)
    right = 0
    try:
        config = stack_config(args.stack)
        with stages.stage(f"Base model of stack {args.stack}"):
            config = base_model(config)
        with stages.stage("Plan the stack offline (the real program under Pulumi's mocks)"):
            run = plan(config, args.stack)
        with stages.stage("The images' own environments (venvs from their requirements)"):
            trainer, server = image_env("trainer"), image_env("server")
            print(f"      trainer: {trainer.python}\n      server: {server.python}")
        with stages.stage("Run the planned training job as Azure ML runs it"):
            job = run_planned_job(
                run, data_files(config), trainer, workdir / "job", timeout_s=JOB_TIMEOUT_S
            )
            print(f"      $ {job.command}\n      log: {job.log}", flush=True)
        with contextlib.ExitStack() as running:
            with stages.stage("Register the model and start the planned deployment (probes)"):
                deployment = running.enter_context(
                    deploy_planned(run, job.outputs, server, workdir / "deployment")
                )
                print(f"      endpoint: {deployment.scoring_uri}", flush=True)
            with stages.stage("Chat through the `openai` client at the endpoint"):
                right = chat(deployment)
            with stages.stage("Score the reference workflow's two bodies at /score"):
                score(deployment)
    except (StageFailed, ImageSpecError, JobContractError, JobFailed, DeploymentFailed) as failure:
        print(f"\nREHEARSAL FAILED: {failure}", file=sys.stderr)
        return 1
    print(
        f"\nRehearsal of stack {args.stack} finished in {time.perf_counter() - started:.0f} s: "
        f"{right}/{len(QUESTIONS)} answers show the learned task."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
