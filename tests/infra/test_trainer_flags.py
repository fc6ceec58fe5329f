"""trainerArgs are checked against the trainer's own flags before anything is created: names (with
suggestions), value types, list values, and flags the job must not get, in one message.

The config arrives as the engine passes it (JSON text per key). The flags come from the
generated table; tests/pipeline/test_trainer_command.py checks that table against the trainer.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from phi3_infra.config import ConfigError, StackConfig, config_from_flat
from phi3_infra.trainer_flags import REFUSED_FLAGS, trainer_flags

TRAINING_STACK = {
    "azure-native:location": "eastus2",
    "phi3-foundry:owner": "team@contoso.com",
    "phi3-foundry:expiresOn": "2027-01-31",
    "phi3-foundry:stages": '["infra", "train"]',
    "phi3-foundry:trainingData": "data/train.jsonl",
}
KEY = "phi3-foundry:trainerArgs"


def _config(trainer_args: dict[str, Any], **flat: str) -> StackConfig:
    return config_from_flat(TRAINING_STACK | flat | {KEY: json.dumps(trainer_args)})


def _error(trainer_args: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        _config(trainer_args)
    return str(caught.value)


@pytest.mark.parametrize(
    ("trainer_args", "expected"),
    [
        ({"num_epochs": 3}, "[num_epochs]: not a flag of `python -m phi3_trainer`; did you mean "),
        ({"lora_rank": 8}, "[lora_rank]: not a flag"),
        ({"Num-Epochs": 3}, "[Num-Epochs]: not a flag of `python -m phi3_trainer`; did you mean "),
        ({"no_use_lora": True}, "[no_use_lora]: not a flag name here; write use_lora: false"),
        ({"learning_rate": "fast"}, "[learning_rate]: expects a number, got 'fast'"),
        ({"lora_r": 1.5}, "[lora_r]: expects a whole number, got 1.5"),
        ({"packing": "maybe"}, "[packing]: expects true or false, got 'maybe'"),
        ({"on_invalid": "skip"}, "[on_invalid]: expects one of fail, drop, got 'skip'"),
        ({"optim": "adamw"}, "[optim]: expects one of its "),
        ({"lora_r": [8, 16]}, "[lora_r]: takes one value, got a list [8, 16]"),
        ({"lora_target_modules": []}, "[lora_target_modules]: needs at least one item"),
        ({"seed": None}, "[seed]: null is not a value; leave the flag out"),
        (
            {"lr_scheduler_kwargs": {"num_cycles": 2}},
            "[lr_scheduler_kwargs]: takes text, not a map",
        ),
        ({"liger_kernel_config": "{}"}, "[liger_kernel_config]: its type (dict) cannot be given"),
        ({"run_name": "--push_to_hub"}, "[run_name]: '--push_to_hub' starts with '-'"),
        # Text the parser takes, but TrainingArguments.__post_init__ turns into its enum or reads
        # as JSON, failing the job at start-up (transformers training_args.py).
        (
            {"lr_scheduler_type": "cosinee"},
            "[lr_scheduler_type]: expects one of its 12 choices",
        ),
        ({"eval_strategy": "step"}, "[eval_strategy]: expects one of no, steps, epoch, got 'step'"),
        ({"lr_scheduler_kwargs": "{bad"}, "[lr_scheduler_kwargs]: is read as JSON"),
        # The trainer's own value rules (phi3_training_rules.flag_rules), before any GPU is queued.
        (
            {"per_device_train_batch_size": 0},
            "[per_device_train_batch_size]: must be at least 1, got 0",
        ),
        ({"learning_rate": "-1"}, "[learning_rate]: must be above 0, got -1.0"),
        ({"num_train_epochs": 0}, "[num_train_epochs]: must be above 0, got 0.0"),
        ({"seed": -1}, "[seed]: must be in [0, 4294967295], got -1"),
        # A combination with a trainer default (max_length 2048), which the stack does not give.
        (
            {"packing": False, "padding_free": True},
            "[padding_free]: true with --packing false, --max_length 2048: padding-free",
        ),
        ({"model_init_kwargs": '{"dtype": "bfloat16"}'}, "[model_init_kwargs]: "),
    ],
)
def test_a_bad_flag_is_named_with_the_reason(trainer_args: dict[str, Any], expected: str) -> None:
    assert f"{KEY}{expected}" in _error(trainer_args)


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("num_epochs", "num_train_epochs"),
        ("lora_rank", "lora_r"),
        ("Num-Epochs", "num_train_epochs"),
    ],
)
def test_a_misspelt_flag_gets_the_real_one_suggested(name: str, suggestion: str) -> None:
    (line,) = [line for line in _error({name: 3}).splitlines() if f"[{name}]" in line]
    assert suggestion in line.split("did you mean ", 1)[1]


@pytest.mark.parametrize(
    ("trainer_args", "reason"),
    [
        ({"output_dir": "/tmp/out"}, "set by the program: the job's model output"),
        ({"train_file": "other.jsonl"}, "set by the program from phi3-foundry:trainingData"),
        ({"model_name_or_path": "gpt2"}, "set by the program from phi3-foundry:baseModel"),
        ({"config": "run.yaml"}, "reads a YAML file the job does not have"),
        ({"push_to_hub": True}, "uploads from the job to the Hugging Face Hub"),
        ({"hub_model_id": "me/phi3"}, "uploads from the job to the Hugging Face Hub"),
        ({"hub_token": "hf_abc"}, "a secret"),
        ({"trust_remote_code": True}, "runs Python code from the model's repository"),
        ({"trackio_space_id": "me/runs"}, "publishes the run to a Hugging Face Space"),
        ({"resume_from_checkpoint": "ckpt"}, "not read by the trainer; use resume"),
    ],
)
def test_flags_the_program_sets_or_that_are_unsafe_are_refused(
    trainer_args: dict[str, Any], reason: str
) -> None:
    (name,) = trainer_args
    assert f"{KEY}[{name}]: {reason}" in _error(trainer_args)


def test_every_problem_is_listed_in_one_message() -> None:
    message = _error({"num_epochs": 3, "learning_rate": "fast", "push_to_hub": True, "seed": 1})
    lines = [line.strip() for line in message.splitlines()]
    flagged = [line.split("]")[0] for line in lines if line.startswith(f"{KEY}[")]
    assert flagged == [f"{KEY}[num_epochs", f"{KEY}[learning_rate", f"{KEY}[push_to_hub"]


def test_valid_flags_pass_as_given_with_list_values() -> None:
    trainer_args = {
        "num_train_epochs": 3,
        "learning_rate": 0.0002,
        "lora_target_modules": ["qkv_proj", "o_proj"],
        "lora_modules_to_save": "lm_head",  # one word for a list-valued flag is a list of one
        "max_steps": -1,
        "optim": "adamw_torch",
        "use_lora": True,
        "run_name": "capitals v2",
    }
    assert _config(trainer_args).trainer_args == trainer_args


def test_text_values_pass_where_the_trainers_parser_accepts_the_text() -> None:
    # `pulumi config set --path` stores 0.0002 as text (only true/false and plain integers are
    # converted: pulumi/pulumi sdk/go/common/resource/config/map.go, adjustObjectValue); the job
    # command carries text either way. Bools become true/false for the rules that read them.
    config = _config({"learning_rate": "0.0002", "lora_r": "8", "packing": "no"})
    assert config.trainer_args == {"learning_rate": "0.0002", "lora_r": "8", "packing": False}


def test_an_optional_flag_takes_none_as_the_trainer_does() -> None:
    # TRL reads "none" as None for an optional field (trl/scripts/_hf_argparser.py,
    # _accept_none): without packing, padding-free batches are fine with no max_length.
    trainer_args = {"packing": False, "padding_free": True, "max_length": "none"}
    assert _config(trainer_args).trainer_args == trainer_args
    refused = _error({"max_length": "None"})
    assert "[max_length]: None with --packing true: packing needs --max_length" in refused


def test_merge_output_written_as_text_still_counts_for_serving() -> None:
    with pytest.raises(ConfigError, match="merge_output false leaves no merged model"):
        _config({"merge_output": "no"}, **{"phi3-foundry:stages": '["infra", "train", "serve"]'})


def test_every_refused_flag_is_one_of_the_trainers() -> None:
    """A flag renamed upstream must not leave a stale refusal behind (config is TrlParser's own
    --config, outside the dataclasses)."""
    assert set(REFUSED_FLAGS) - set(trainer_flags()) == {"config"}


def test_the_check_needs_neither_torch_nor_trl(repo_root: Path) -> None:
    """The program's venv has neither: checking a stack's flags must not import them."""
    probe = (
        "import sys; from phi3_infra.config import config_from_flat; "
        f"config_from_flat({{**{TRAINING_STACK!r}, {KEY!r}: '{{\"lora_r\": 8}}'}}); "
        "print(sorted({'torch', 'trl', 'transformers'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=repo_root / "infra",
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"
