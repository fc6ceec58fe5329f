"""The planned job's command is one the trainer's own parser reads back, flag for flag; a bad
trainer flag fails the plan before any resource; the flag table the program checks against is
the trainer parser's, regenerated here."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import pytest

from phi3_infra.config import ConfigError
from phi3_infra.trainer_flags import FLAGS_FILE
from phi3_trainer.config import make_parser, parse_args
from phi3_trainer.flag_table import render
from tests.pipeline.conftest import Plan

JOB = "azure-native:machinelearningservices:Job"
TRAIN_ONLY = '["infra", "train"]'
# Where Azure ML binds ${{inputs.<name>}} and ${{outputs.<name>}} in the job's container.
_BINDING = re.compile(r"\$\{\{(inputs|outputs)\.(\w+)\}\}")


def _bound(command: str) -> str:
    return _BINDING.sub(lambda match: f"/mnt/azureml/{match[1]}/{match[2]}", command)


def test_the_flag_table_is_the_trainers_parser() -> None:
    assert FLAGS_FILE.read_text(encoding="utf-8") == render(make_parser()), (
        f"{FLAGS_FILE.name} is stale: run `python scripts/trainer_flags.py`"
    )


def test_the_job_command_parses_with_the_trainers_parser(
    plan: Plan, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    trainer_args: dict[str, Any] = {
        "num_train_epochs": 2,
        "learning_rate": 5e-05,
        "lora_target_modules": ["qkv_proj", "o_proj", "down_proj"],  # list-valued (nargs="+")
        "packing": False,
        "optim": "adamw_torch",
        "max_steps": -1,
        "run_name": "capitals; $(whoami) 'v2'",  # shell syntax stays one word
    }
    run = plan(stages=TRAIN_ONLY, trainerArgs=json.dumps(trainer_args))
    (job,) = run.of_type(JOB)
    words = shlex.split(_bound(job.inputs["properties"]["command"]))
    assert words[:3] == ["python", "-m", "phi3_trainer"]

    script, training = parse_args(words[3:])

    assert script.train_file == "/mnt/azureml/inputs/train"
    assert training.output_dir == "/mnt/azureml/outputs/model"
    assert script.model_name_or_path == "microsoft/Phi-3-mini-4k-instruct"
    assert script.lora_target_modules == ["qkv_proj", "o_proj", "down_proj"]
    assert training.num_train_epochs == 2 and training.learning_rate == 5e-05
    assert training.packing is False and training.optim == "adamw_torch"
    assert training.max_steps == -1 and training.run_name == "capitals; $(whoami) 'v2'"


@pytest.mark.parametrize(
    ("trainer_args", "expected"),
    [
        ({"num_epochs": 3}, "[num_epochs]: not a flag of `python -m phi3_trainer`; did you mean "),
        ({"learning_rate": "fast"}, "[learning_rate]: expects a number, got 'fast'"),
        ({"push_to_hub": True}, "[push_to_hub]: uploads from the job to the Hugging Face Hub"),
        (
            {"per_device_train_batch_size": 0},
            "[per_device_train_batch_size]: must be at least 1, got 0",
        ),
    ],
    ids=["misspelt", "mistyped", "unsafe", "out-of-range"],
)
def test_a_bad_trainer_flag_fails_the_plan_before_any_resource(
    plan: Plan, registered: list[str], trainer_args: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        plan(stages=TRAIN_ONLY, trainerArgs=json.dumps(trainer_args))
    assert f"phi3-foundry:trainerArgs{expected}" in str(caught.value)
    assert registered == []
